"""``python -m leadrelay``: the ``leadrelay`` command."""

from leadrelay.collecting import command_started, loading_command

loading_command()  # no collections while the command's modules load; main() resumes them
try:
    from leadrelay.cli import main
except BaseException as exc:
    command_started()  # resumed all the same (for a host that runs this module and goes on)
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C while starting: nothing done, no traceback
        raise SystemExit(130) from None
    raise

main()
