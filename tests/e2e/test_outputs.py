"""Rich outputs of a %%gpu cell behave like those of a local cell."""
from __future__ import annotations

import base64

import pytest

from .helpers import LOAD, last_footer, rich_outputs, stream_text, user_outputs

# A valid 1x1 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _text(o) -> str:
    t = o["data"].get("text/plain", "")
    return "".join(t) if isinstance(t, list) else t


@pytest.mark.timeout(120)
def test_last_expression_is_displayed(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nx = 41\nx + 1"])
    outs = rich_outputs(nb.cells[1])
    assert len(outs) == 1, outs
    assert outs[0]["output_type"] in ("execute_result", "display_data")
    assert _text(outs[0]) == "42"
    last_footer(nb.cells[1])


@pytest.mark.timeout(120)
def test_trailing_semicolon_silences_the_last_value_as_locally(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nx = 41\nx + 1;", "x + 1;", "%%gpu\nx + 2  # no semicolon"])
    assert rich_outputs(nb.cells[1]) == rich_outputs(nb.cells[2]) == []  # the local cell: silenced too
    assert [_text(o) for o in rich_outputs(nb.cells[3])] == ["43"]
    last_footer(nb.cells[1])


@pytest.mark.timeout(120)
def test_display_of_rich_mimebundles(run_notebook):
    body = f"""%%gpu
import base64
from IPython.display import display, HTML, Image, SVG, JSON, Markdown, Latex
display(HTML('<b>bold</b>'))
display(Image(data=base64.b64decode('{PNG_B64}'), format='png'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'))
display(JSON({{'a': 1, 'b': [1, 2]}}))
display(Markdown('# Title'))
display(Latex(r'$\\alpha + \\beta$'))
display({{'text/plain': 'raw plain', 'text/html': '<i>raw</i>'}}, raw=True)
"""
    nb = run_notebook([LOAD, body])
    outs = rich_outputs(nb.cells[1])
    assert len(outs) == 7, [sorted(o["data"]) for o in outs]
    html, png, svg, js, md, latex, raw = (o["data"] for o in outs)
    assert html["text/html"] == "<b>bold</b>"
    assert base64.b64decode(png["image/png"]).startswith(PNG_MAGIC)
    assert "<svg" in svg["image/svg+xml"] and "<rect" in svg["image/svg+xml"]
    assert js["application/json"] == {"a": 1, "b": [1, 2]}
    assert md["text/markdown"] == "# Title"
    assert latex["text/latex"] == r"$\alpha + \beta$"
    assert raw["text/html"] == "<i>raw</i>" and raw["text/plain"] == "raw plain"
    last_footer(nb.cells[1])


@pytest.mark.timeout(180)
def test_reprs_returning_bytes_and_numpy_numbers_show_as_in_a_local_cell(run_notebook):
    """PIL's and sympy's `_repr_png_` return bytes, a `_repr_json_` may hold numpy numbers and
    tuples: ipykernel's message packer makes them base64 text and JSON, and so must the worker
    (the cell used to fail with 'protocol header field of type bytes is not JSON')."""
    define = (
        "import numpy as np\nfrom PIL import Image\n"
        "class Shown:\n"
        "    def __repr__(self):\n"
        "        return 'Shown()'\n"
        "    def _repr_png_(self):\n"
        "        return Image.new('RGB', (2, 2), 'red')._repr_png_()\n"
        "    def _repr_json_(self):\n"
        "        return {'n': np.int64(3), 'pair': (1, 2.5)}\n"
    )
    cell = "Image.new('RGB', (3, 3), 'blue')\n"
    shown = "display(Shown())\nShown()"
    nb = run_notebook([LOAD, define, cell, "%%gpu\n" + cell, shown, "%%gpu\n" + shown])
    here, there = rich_outputs(nb.cells[2]), rich_outputs(nb.cells[3])
    assert [o["data"] for o in there] == [o["data"] for o in here], (there, here)
    png = there[0]["data"]["image/png"]
    assert base64.b64decode("".join(png) if isinstance(png, list) else png).startswith(PNG_MAGIC)
    here, there = rich_outputs(nb.cells[4]), rich_outputs(nb.cells[5])
    assert len(there) == 2 and [o["data"] for o in there] == [o["data"] for o in here], (there, here)
    assert there[0]["data"]["application/json"] == {"n": 3, "pair": [1, 2.5]}


@pytest.mark.timeout(240)
def test_outputs_larger_than_a_message_header_arrive_whole_and_the_worker_stays(run_notebook):
    """A 20 MB HTML display, a 30 MB printed line and a 30 MB last value: a local cell shows them.
    Each used to make a message the peer refused, which closed the worker's connection and lost
    its namespace."""
    nb = run_notebook(
        [
            LOAD,
            "%%gpu\nkept = 7\nfrom IPython.display import HTML, display\n"
            "display(HTML('<p>' + 'x' * 20_000_000 + '</p>'))\nprint('z' * 30_000_000)\n's' * 30_000_000",
            "%%gpu\nprint(kept)",
        ],
        timeout=200,
    )
    outs = user_outputs(nb.cells[1])
    html = [o for o in outs if o["output_type"] == "display_data"]
    assert len(html) == 1 and len(html[0]["data"]["text/html"]) == 20_000_007
    assert stream_text(nb.cells[1]) == "z" * 30_000_000 + "\n"
    result = [o for o in outs if o["output_type"] == "execute_result"]
    assert len(result) == 1 and len(_text(result[0])) == 30_000_002
    assert stream_text(nb.cells[2]) == "7\n", "the worker was lost"


@pytest.mark.timeout(180)
def test_matplotlib_show_yields_png(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"])
    pngs = [o for o in rich_outputs(nb.cells[1]) if "image/png" in o["data"]]
    assert len(pngs) == 1, [sorted(o["data"]) for o in rich_outputs(nb.cells[1])]
    assert base64.b64decode(pngs[0]["data"]["image/png"]).startswith(PNG_MAGIC)
    last_footer(nb.cells[1])


@pytest.mark.timeout(180)
def test_matplotlib_figure_left_open_is_shown(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nimport matplotlib.pyplot as plt\nplt.plot([3, 1, 2]);"])
    pngs = [o for o in rich_outputs(nb.cells[1]) if "image/png" in o["data"]]
    assert len(pngs) == 1, [sorted(o["data"]) for o in rich_outputs(nb.cells[1])]
    assert base64.b64decode(pngs[0]["data"]["image/png"]).startswith(PNG_MAGIC)


@pytest.mark.timeout(120)
def test_clear_output_wait_leaves_only_the_final_text(run_notebook, tmp_path):
    import nbformat

    nb = run_notebook(
        [
            LOAD,
            "%%gpu\nfrom IPython.display import clear_output\nfor i in range(20):\n"
            "    clear_output(wait=True)\n    print(f'step {i}')",
        ]
    )
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    cell = nbformat.read(path, as_version=4).cells[1]
    assert stream_text(cell) == "step 19\n"
    assert [o["output_type"] for o in user_outputs(cell)] == ["stream"]
    last_footer(cell)


@pytest.mark.timeout(120)
def test_display_handle_update_leaves_one_updated_output(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nh = display('a', display_id=True)\nh.update('b')"])
    outs = rich_outputs(nb.cells[1])
    assert [_text(o) for o in outs] == ["'b'"]
    last_footer(nb.cells[1])


@pytest.mark.timeout(120)
def test_display_ids_of_two_cells_do_not_collide(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "%%gpu\nh1 = display('first', display_id=True)",
            "%%gpu\nh2 = display('second', display_id=True)\nh2.update('second, updated')",
        ]
    )
    first, second = nb.cells[1], nb.cells[2]
    assert [_text(o) for o in rich_outputs(first)] == ["'first'"]
    assert [_text(o) for o in rich_outputs(second)] == ["'second, updated'"]
    # Each cell keeps its own footer too.
    f1, f2 = last_footer(first), last_footer(second)
    assert f1["status"] == "ok" and f2["status"] == "ok"


@pytest.mark.timeout(180)
def test_a_display_handle_made_in_a_gpu_cell_updates_its_output_from_local_and_gpu_cells(run_notebook):
    """As with a local handle: `h.update()` in a later cell, local or `%%gpu`, updates the output
    the handle's cell made."""
    made = "%%gpu\nh = display('first', display_id=True)"
    nb = run_notebook([LOAD, made, "h.update('updated here')"])
    assert [_text(o) for o in rich_outputs(nb.cells[1])] == ["'updated here'"]
    nb = run_notebook([LOAD, made, "h.update('updated here')", "%%gpu\nh.update('updated there')"])
    assert [_text(o) for o in rich_outputs(nb.cells[1])] == ["'updated there'"]
