"""The REST API: the door for approvers and the tools that launch executions."""
