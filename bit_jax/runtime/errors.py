"""The failures a user must act on. The command lines print them as one message, without a
traceback, and exit with the code that says which kind it was."""


class UserError(Exception):
  """A problem with a message for the user."""

  exit_code = 1


class ConfigError(UserError):
  """The config, the flags or the data and files they name are wrong; nothing was trained."""

  exit_code = 2


class RunError(UserError):
  """The run failed while running (NaN loss, disk full, a workdir in use); what was saved
  before is intact and the message says where a rerun resumes."""

  exit_code = 1


class Stopped(Exception):
  """A stop was requested (SIGTERM: a preempted VM); the run saved what it needs to resume."""

  exit_code = 0
