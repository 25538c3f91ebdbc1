"""Bounded lifetimes for the stand-ins: serve until whoever started us closes our stdin (so a
crashed test or script never leaves a server behind) or until `lifetime` seconds pass."""
import sys
import threading


def wait_for_parent(lifetime):
    done = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait(timeout=lifetime)
