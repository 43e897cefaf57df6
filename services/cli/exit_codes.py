"""Exit codes of the commands that talk to a running querylift (``ask``, ``feedback``, ``console``)."""

OK = 0
#: The question was taken but could not be answered (chat.error), or a correction was refused.
NOT_ANSWERED = 1
#: The project (or the answer given feedback) is unknown, or the arguments do not make a request.
UNKNOWN = 2
#: Nothing runs to talk to: no `querylift up`, no configured broker.
NOT_RUNNING = 3
#: Nothing came back in time.
TIMED_OUT = 4
