# syntax=docker/dockerfile:1
# Reclaim: one image for `reclaim worker` (the default) and `reclaim api`.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/reclaim
ENV PATH=/opt/reclaim/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself (see .dockerignore for what stays out of the context).
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && reclaim --help > /dev/null


FROM python:3.11-slim
ENV PATH=/opt/reclaim/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 reclaim \
    && useradd --system --uid 10001 --gid reclaim --home-dir /home/reclaim --create-home \
        --shell /usr/sbin/nologin reclaim
COPY --from=build /opt/reclaim /opt/reclaim

USER 10001:10001
WORKDIR /home/reclaim
CMD ["reclaim", "worker"]
