"""`%%gpu` (run a cell on a worker) and `%gpu` (status, release, use, config)."""
from __future__ import annotations

import re


from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, argument_group, magic_arguments, parse_argstring

from jupyter_gpu._wire import messages
from jupyter_gpu.notebook.cell import run_cell
from jupyter_gpu.notebook.cell_options import CellOptions, positive
from jupyter_gpu.notebook.session import KernelSession
from jupyter_gpu._wire import settings


def duration(text: str) -> float:
    """'300', '30s', '5m', '1h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def names(text: str) -> list[str]:
    return [n for n in re.split(r"[,\s]+", text.strip()) if n]


def _device_group(f):
    """Options shared by %%gpu and `%gpu config`: where a cell runs and how long it stays warm."""
    f = argument("--image", default=None, metavar="NAME",
                 help="the worker image: a jupyter_gpu.Image in a variable of this kernel (built once, its "
                      "build streamed here), or as named in the backend's [images.NAME] config (its env, preloaded "
                      "modules, interpreter or container base); each image has its own workers and namespace "
                      "(default: default)")(f)
    f = argument("--keep-warm", type=duration, default=None,
                 help="how long the worker stays warm after the cell (30s, 5m, 1h; default 5m)")(f)
    f = argument("--gpu", default=None, help="GPU type, e.g. H100 or A100, A100:2 for a worker with two (default: the first the backend offers, cpu without a GPU)")(f)
    return argument_group("device")(f)


# the defaults of `%gpu config` a kernel starts with (`jupyter-gpu run` sets them from the
# notebook's metadata.jupyter_gpu, where the JupyterLab sidebar stores the notebook's choice)
DEFAULT_GPU_ENV, DEFAULT_KEEP_WARM_ENV = settings.DEFAULT_GPU.name, settings.DEFAULT_KEEP_WARM.name
DEFAULT_IMAGE_ENV = settings.DEFAULT_IMAGE.name


@magics_class
class GpuMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.session = KernelSession(shell)
        self._parsed: dict = {}  # %%gpu line -> its parsed options
        self.session.defaults.gpu = settings.DEFAULT_GPU.get() or None
        self.session.defaults.image = settings.DEFAULT_IMAGE.get() or None
        if settings.DEFAULT_KEEP_WARM.get():
            self.session.defaults.keep_warm = duration(settings.DEFAULT_KEEP_WARM.get())

    @magic_arguments("%gpu")
    @_device_group
    @argument_group("namespace")
    @argument("--in", dest="inputs", type=names, default=None,
              help="comma-separated names to send (default: the cell's free names that exist here)")
    @argument("--out", type=names, default=None,
              help="comma-separated names to bring back (default: every name the cell binds)")
    @argument("--no-out", action="store_true", help="bring no names back; they stay on the worker")
    @argument("--keep-remote", type=names, default=None, metavar="NAMES",
              help="comma-separated names that stay on the worker, used there by later cells (a value larger "
                   "than $JUPYTER_GPU_MAX_RETURN, default 4GiB, stays too unless --out names it)")
    @argument("--pip", default=None, metavar='"REQ ..."',
              help='packages the cell needs, e.g. --pip "six==1.16.0 attrs": the kernel\'s environment plus '
                   'these (or --image IMG plus these), built once, kept')
    @argument_group("limits")
    @argument("--timeout", type=positive, default=None, help="interrupt the cell after this many seconds")
    @argument("--max-cost", type=positive, default=None, metavar="USD",
              help="interrupt the cell once its billed serverless cost passes this many dollars")
    @argument("-h", "--help", action="store_true", help="show this help and run nothing")
    @cell_magic("gpu")
    def gpu_cell(self, line, cell):
        """Run this cell on a GPU worker; output streams back live, names come back, a footer shows the cost.

        The cell behaves like a local one: last expression displayed, display(), matplotlib,
        tracebacks with this cell's line numbers.  The stop button interrupts the remote code; a
        second press kills the worker.
        """
        opts = self.cell_options(line)
        if opts is None:
            print(self.gpu_cell.__doc__)
            return None
        if not cell.strip():  # as an empty local cell: nothing runs, nothing shows, no worker starts
            return None
        run_cell(self.session, cell, opts)
        return None

    def cell_options(self, line: str) -> CellOptions | None:
        """A %%gpu line's options (None: it asks for the help)."""
        args = self._cell_args(line)
        if args.help:
            return None
        return CellOptions(
            gpu=args.gpu, inputs=args.inputs, out=args.out, no_out=args.no_out, keep_remote=args.keep_remote,
            keep_warm=args.keep_warm, timeout=args.timeout, line=line.strip(), max_cost=args.max_cost,
            image=args.image, pip=args.pip,
        )

    def _cell_args(self, line: str):
        """The parsed options of a %%gpu line; a notebook repeats the same few lines, and argparse
        costs ~0.05 ms a cell (the options' types are pure functions of the text)."""
        args = self._parsed.get(line)
        if args is None:
            args = parse_argstring(self.gpu_cell, line)
            if len(self._parsed) < 64:
                self._parsed[line] = args
        return args

    @magic_arguments("gpu")
    @argument("command", choices=["status", "release", "prewarm", "use", "config", "cost", "report"],
              help="what to do (report: the same as cost)")
    @argument("url", nargs="?", default=None, help="with `use`: the backend URL")
    @argument("--token", default=None, help="with `use`: the backend token")
    @_device_group
    @argument("-h", "--help", action="store_true", help="show this help")
    @line_magic("gpu")
    def gpu_line(self, line):
        """%gpu status | release | prewarm [--gpu T] [--image NAME] | use URL [--token T] | config [--gpu T] [--image NAME] [--keep-warm 5m] | cost (or report)"""
        if re.search(r"(^|\s)(-h|--help)\b", line):
            print(self.gpu_line.__doc__)
            return None
        args = parse_argstring(self.gpu_line, line)
        if args.command in ("cost", "report"):  # this kernel's session so far (see report.py)
            from IPython.display import display

            from jupyter_gpu.cost import report

            display(report.bundle(report.from_records([("this session", self.session.footers)])), raw=True)
        elif args.command == "status":
            print(self.status_text())
        elif args.command == "release":
            reply = self.session.request({"type": messages.RELEASE}, messages.STATUS_REPLY)
            print(f"released {reply.get('released', 0)} worker(s)")
            for gpu in list(self.session.held):
                self.session.forget(gpu)
        elif args.command == "prewarm":
            gpu = self.session.choose_gpu(args.gpu)
            keep_warm = args.keep_warm if args.keep_warm is not None else self.session.defaults.keep_warm
            image = args.image or self.session.defaults.image
            reply = self.session.request(
                {"type": messages.PREWARM, "gpu": gpu, "keep_warm": keep_warm, "image": image}, messages.STATUS_REPLY,
                timeout=300,
            )
            p = reply["prewarmed"]
            how = f"started in {p['cold_start']:.2f} s" if p["started"] else "already warm"
            of = f" (image {p['image']})" if p.get("image", "default") != "default" else ""
            print(f"{p['gpu']} worker {p['worker']}{of} on {p['device']}: {how}")
        elif args.command == "use":
            if not args.url:
                print("usage: %gpu use URL [--token T]")
                return None
            self.session.connect(args.url, args.token or "")
            print(f"using the backend at {args.url}")
        elif args.command == "config":
            if args.gpu is not None:
                self.session.defaults.gpu = args.gpu
            if args.keep_warm is not None:
                self.session.defaults.keep_warm = args.keep_warm
            if args.image is not None:
                self.session.defaults.image = args.image
            d = self.session.defaults
            print(f"defaults: gpu={d.gpu or 'backend default'} keep-warm={d.keep_warm or 'backend default'}"
                  f" image={d.image or 'default'}")
        return None

    def status_text(self) -> str:
        reply = self.session.request({"type": messages.STATUS}, messages.STATUS_REPLY)
        leases = reply.get("leases", [])
        head = f"runtime: {reply.get('runtime')} · offers: {', '.join(reply.get('offers', []))}"
        if reply.get("images"):
            head += f" · images: {', '.join(reply['images'])}"
        if not leases:
            return f"{head}\nno workers"
        lines = [head]
        for l in leases:
            left = l.get("keep_warm_left")
            warm = "busy" if left is None else f"keep-warm: {left:.0f} s left"
            lines.append(f"{l['gpu']:<10} {l.get('image', 'default'):<10} {l['device']:<24} {l['worker']}  "
                         f"{l['state']:<5} {warm}")
        return "\n".join(lines)




_EMPTY = re.compile(r"^\s*%%gpu\b")


def empty_body(lines: list[str]) -> list[str]:
    """IPython refuses a cell magic whose body is empty before calling it; an empty local cell
    just runs, so an empty `%%gpu` cell (`%%gpu --help` too) gets a blank body, which the magic
    reads as: nothing to run."""
    if lines and _EMPTY.match(lines[0]) and not "".join(lines[1:]).strip():
        return [lines[0].rstrip("\n") + "\n", "\n"]
    return lines
