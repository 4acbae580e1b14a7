"""``python -m leadrelay``: the ``leadrelay`` command."""

from leadrelay.collecting import loading_command

loading_command()  # no collections while the command's modules load; main() resumes them
from leadrelay.cli import main  # noqa: E402

main()
