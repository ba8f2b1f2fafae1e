"""Publish a remote cell's outputs on the kernel's iopub, from the cell's own thread, under the
cell's parent header - so nbclient and JupyterLab attach every output to the right cell."""
from __future__ import annotations

import sys


class Publisher:
    def __init__(self, shell):
        self.shell = shell
        dp = shell.display_pub
        # ipykernel: send straight to iopub (its OutStream would add a flush round trip per chunk)
        self.zmq = all(hasattr(dp, a) for a in ("session", "pub_socket", "parent_header"))

    def begin(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()

    def stream(self, name: str, text: str) -> None:
        if self.zmq:
            dp = self.shell.display_pub
            dp.session.send(
                dp.pub_socket, "stream", {"name": name, "text": text},
                parent=dp.parent_header, ident=b"stream." + name.encode(),
            )
        else:
            out = sys.stderr if name == "stderr" else sys.stdout
            out.write(text)
            out.flush()

    def display(self, data: dict, metadata: dict, transient: dict | None = None, update: bool = False) -> None:
        self.shell.display_pub.publish(data, metadata, transient=transient or {}, update=update)

    def clear_output(self, wait: bool) -> None:
        self.shell.display_pub.clear_output(wait)

    def execute_result(self, data: dict, metadata: dict, execution_count: int) -> None:
        dh = self.shell.displayhook
        if all(hasattr(dh, a) for a in ("session", "pub_socket", "parent_header")):
            dh.session.send(
                dh.pub_socket, "execute_result",
                {"data": data, "metadata": metadata, "execution_count": execution_count},
                parent=dh.parent_header, ident=b"execute_result",
            )
        else:
            self.display(data, metadata)
