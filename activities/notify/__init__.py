"""Notification channels: one module per channel (webhook, slack, teams, email, sns), found by `base.registry`.

`delivery.NotifyActivities` is the activity (`deliver_notification`): it resolves the channel
from the notify file (`config.load_notify_file`), its secrets at send time, and sends.
"""
