"""A `%%gpu` cell shows what the same local cell shows: each case runs as a local cell and then as a
`%%gpu` cell in one kernel, and the normalised outputs must be equal (differential.py).

Grow CASES whenever a difference is found: each case is what real notebooks do.
"""
from __future__ import annotations

import pytest

from .differential import Case, run_pairs, workers_during

CASES = [
    # prints, displays, last values
    Case("print", "print('hello')\nprint(1, 2, sep='-')"),
    Case("last-value", "x = 40\nx + 2"),
    Case("semicolon", "x = 40\nx + 2;"),
    Case("stderr", "import sys\nprint('warn', file=sys.stderr)\nprint('out')"),
    Case("interleaved", "import sys\nfor i in range(3):\n    print(i)\n    print(-i, file=sys.stderr)"),
    Case("partial-line", "print('a', end='')\nprint('b')"),
    Case("display-html", "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))"),
    Case("display-markdown-latex",
         "from IPython.display import Markdown, Latex, display\ndisplay(Markdown('# T'))\ndisplay(Latex('$x^2$'))"),
    Case("display-raw", "from IPython.display import display\ndisplay({'text/plain': 'p', 'text/html': '<i>h</i>'}, raw=True)"),
    Case("display-multiple-values", "from IPython.display import display\ndisplay(1, 'two', [3])"),
    Case("display-id-update",
         "from IPython.display import display\nh = display('first', display_id=True)\nh.update('second')\nprint('after')"),
    Case("clear-output", "from IPython.display import clear_output\nprint('gone')\nclear_output()\nprint('kept')"),
    Case("clear-output-wait-last",
         "from IPython.display import clear_output\nprint('x', end='')\nclear_output(wait=True)"),
    Case("clear-output-wait-then-print",
         "from IPython.display import clear_output\nprint('old')\nclear_output(wait=True)\nprint('new')"),
    Case("clear-output-wait-display-last",
         "from IPython.display import clear_output, display\ndisplay('shown')\nclear_output(wait=True)"),
    Case("clear-output-wait-then-error",
         "from IPython.display import clear_output\nprint('x')\nclear_output(wait=True)\nraise ValueError('v')"),
    Case("empty-cell", ""),
    Case("blank-lines-cell", "\n   \n", gpu_line="--gpu cpu"),
    Case("pprint-dict", "{'b': [1, 2, 3], 'a': {'nested': (1, 2)}}"),
    Case("long-list", "list(range(200))"),
    Case("none-last", "None"),
    # errors
    Case("zero-division", "1 / 0"),
    Case("name-error", "undefined_name_here + 1"),
    Case("error-after-print", "print('before')\nraise ValueError('bad value')"),
    Case("custom-exception", "class MyError(Exception):\n    pass\nraise MyError('mine')"),
    Case("keyerror", "{}['k']"),
    Case("assert", "assert 1 == 2, 'not equal'"),
    # where code says it is (test_code_locations.py compares whole tracebacks)
    Case("frame-line-number", "import inspect\nx = 1\nprint(inspect.currentframe().f_lineno)"),
    Case("error-in-function-line", "def g(x):\n    return x / 0\n\ng(1)"),
    Case("syntax-error", "x = 1\ny = ("),  # its text names the cell's file (ipykernel's name) and line
    Case("indentation-error", "if True:\nprint(1)"),
    Case("getsource", "import inspect\ndef f(x):\n    return x + 1\nprint(inspect.getsource(f))"),
    Case("input-history",  # what holds wherever the cell is in the notebook
         "print(_i == eval('_i%d' % (len(In) - 2)), _iii == eval('_i%d' % (len(In) - 4)), In is _ih)"),
    # rich reprs of real libraries
    Case("numpy-array", "import numpy as np\nnp.arange(12).reshape(3, 4)"),
    Case("numpy-print", "import numpy as np\nprint(np.linspace(0, 1, 5))"),
    Case("pandas-frame", "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})"),
    Case("pandas-series-print", "import pandas as pd\nprint(pd.Series([1.5, 2.5], name='s'))"),
    Case("sympy-expr", "import sympy\nx = sympy.Symbol('x')\nsympy.Integral(x**2, x)"),
    Case("pil-image", "from PIL import Image\nImage.new('RGB', (3, 3), 'blue')"),
    Case("matplotlib-figure",
         "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('t')\nplt.show()"),
    Case("matplotlib-two-figures",
         "import matplotlib.pyplot as plt\nplt.figure(); plt.plot([1, 2])\nplt.figure(); plt.plot([2, 1])\nplt.show()"),
    Case("matplotlib-figure-then-error",
         "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nraise ValueError('after the plot')"),
    Case("print-figure-error-clear-wait",
         "import matplotlib.pyplot as plt\nfrom IPython.display import clear_output\nprint('a')\nplt.plot([3, 1])\n"
         "clear_output(wait=True)\n1 / 0"),
    # widgets and progress bars (the widget's state is compared by test_widgets.py)
    Case("widget-slider", "import ipywidgets as W\nW.IntSlider(value=3, description='n')"),
    Case("widget-display-button", "import ipywidgets as W\ndisplay(W.Button(description='go'))\nprint('after')"),
    Case("widget-interact", "from ipywidgets import interact\ninteract(lambda x: x * 2, x=4);"),
    Case("widget-output-capture",
         "import ipywidgets as W\nout = W.Output()\ndisplay(out)\nwith out:\n    print('inside')\nprint('outside')"),
    Case("tqdm-auto", "from tqdm.auto import tqdm\nfor _ in tqdm(range(50), desc='loop'):\n    pass"),
    # magics and the shell
    Case("line-magic-time", "%time y = sum(range(10))\nprint(y)", ),
    Case("system-echo", "!echo hi"),
    Case("system-capture", "out = !echo captured\nprint(out)"),
    Case("who-magic", "%who_ls int"),
    Case("automagic-one-line", "who_ls int"),  # a one-line cell's dynamic transforms (prefilter), as locally
    Case("system-exit-code", "!exit 3\nprint(_exit_code)"),
    Case("system-stderr", "!echo oops 1>&2"),
    Case("help-is-paged", "len?"),  # a page payload (test_shell_fidelity), no output
    Case("unknown-line-magic", "%no_such_magic_here"),
    Case("kernel-magic-autosave", "%autosave 90"),
    Case("kernel-magic-store", "stored_v = 41\n%store stored_v\n%store -d stored_v"),
    Case("gui-qt", "%gui qt"),
    Case("gui-unknown", "%gui no_such_gui"),
    # the namespace a %%gpu cell leaves (issue 19; more in test_namespace_fidelity.py)
    Case("import-in-gpu-cell-bound-here", "print(json_from_gpu.dumps({'a': 1}), type(json_from_gpu).__name__)",
         setup=("%%gpu\nimport json as json_from_gpu",)),
    Case("two-names-one-list", "alias_a.append(1)\nprint(len(alias_a) == len(alias_b), alias_a is alias_b)",
         setup=("alias_a = alias_b = []",)),
    Case("view-changes-its-base", "view_v += 1\nprint((base_v[1:3] == view_v).all(), base_v.sum() == view_v.sum())",
         setup=("import numpy as np\nbase_v = np.zeros(4)\nview_v = base_v[1:3]",)),
    # the kernel's directory (issue 21): a file beside the notebook, read by a relative path
    Case("file-beside-the-notebook", "import os\nprint(open('beside.txt').read(), os.path.basename(os.getcwd()))",
         setup=("open('beside.txt', 'w').write('written here')",)),
    # the worker's environment (issue 23): the packages the cell imports and ships values of, the same
    # versions there (the zygote preloaded numpy), so no table; PIL's distribution is named otherwise
    Case("packages-the-kernel-has", "import numpy, pandas, IPython, cloudpickle\nfrom PIL import Image as PILImage\n"
         "print(numpy.ones(2).sum(), arr_env.sum(), pandas.Series([1]).size)",
         setup=("import numpy as np\narr_env = np.arange(3)",)),
    # a JSON display nested deeper than a wire header may be (issue 25: schema.MAX_DEPTH): it
    # goes as the display's JSON buffer, shown whole (the backend closed the worker's connection)
    Case("display-nested-300-deep", "from IPython.display import JSON, display\ndeep = []\nx = deep\n"
         "for _ in range(300):\n    x.append([])\n    x = x[0]\ndisplay(JSON(deep))\nprint('shown')"),
]


@pytest.fixture(scope="module")
def pairs(kernel_env, tmp_path_factory):
    result = run_pairs(CASES, kernel_env, str(tmp_path_factory.mktemp("differential")), timeout=180)
    result["<env>"] = kernel_env
    return result


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_remote_cell_shows_what_the_local_cell_shows(pairs, case):
    local, remote, _, _ = pairs[case.id]
    if remote != local:  # the ledger's account of the notebook's workers, should one have been replaced
        pytest.fail(f"{case.id}: local {local!r}\n   %%gpu {remote!r}\n"
                    f"{workers_during(pairs['<env>'], pairs['<span>'])}")
