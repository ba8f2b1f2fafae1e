"""Random sequences of `%%gpu` cells end each cell with the user's own outcome, never an exception
from our code: a stateful property test (hypothesis) against one real kernel, backend and worker.

Each step is what notebooks do and what goes wrong in them: a cell that runs, one that raises, an
input that cannot be pickled, an input whose class the worker cannot import, rebinding a name whose
cell failed, the stop button, `%gpu release`, reading a name only the released worker held.  After
every step the cell's outcome must be the one its code (or the documented failure, named) gives.
"""
from __future__ import annotations

import itertools
import textwrap

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from tests.conftest import LiveKernel, strip_ansi

from .helpers import LOAD

OURS = ("jupyter_gpu/", "jupyter_gpu_worker/", "jupyter_gpu_backend/")  # our code's frames
# the failures we raise on purpose, each naming its cause in its message
DOCUMENTED = {"SerializationError", "RemoteValueLost"}


def _error(cell) -> tuple[str, str, str] | None:
    content = cell.reply["content"]
    if content["status"] == "ok":
        return None
    return content.get("ename", ""), content.get("evalue", ""), strip_ansi("\n".join(content.get("traceback", [])))


@pytest.mark.timeout(900)
def test_random_cell_sequences_end_with_the_users_own_outcome(kernel_env, tmp_path):
    mods = tmp_path / "kernel_only"
    mods.mkdir()
    kernel = LiveKernel(kernel_env)
    counter = itertools.count()
    try:
        kernel.run(LOAD)
        kernel.run(f"import sys, threading\nsys.path.insert(0, {str(mods)!r})")

        class Cells(RuleBasedStateMachine):
            @initialize()
            def start(self):
                self.remote_only: set = set()  # names a cell left only on the worker (--no-out)
                self.failed_names: set = set()
                self.log: list = []

            def run(self, code: str, **kw):
                self.log.append(code)
                return kernel.run(code, ok=False, **kw)

            def _ours(self, err) -> bool:
                ename, evalue, tb = err
                return ename not in DOCUMENTED and any(p in tb for p in OURS)

            @rule(n=st.integers(0, 10**6))
            def runs(self, n):
                cell = self.run(f"%%gpu\nv = {n}\nprint(v * 2)")
                assert _error(cell) is None, (_error(cell), self.log)
                assert cell.stdout() == f"{n * 2}\n"

            @rule(msg=st.text(alphabet="abcdefgh ", min_size=1, max_size=12))
            def raises(self, msg):
                cell = self.run(f"%%gpu\nraise ValueError({msg!r})")
                assert _error(cell)[:2] == ("ValueError", msg), (_error(cell), self.log)

            @rule()
            def unpicklable_input(self):
                name = f"lock{next(counter)}"
                assert _error(self.run(f"{name} = threading.Lock()")) is None
                cell = self.run(f"%%gpu\nprint(type({name}).__name__)")
                err = _error(cell)
                assert err is not None and err[0] == "SerializationError" and name in err[1], (err, self.log)
                self.failed_names.add(name)

            @rule()
            def input_the_worker_cannot_import(self):
                k = next(counter)
                (mods / f"kernel_only_{k}.py").write_text("class Thing:\n    value = 7\n")
                name = f"thing{k}"
                assert _error(self.run(f"import kernel_only_{k}\n{name} = kernel_only_{k}.Thing()")) is None
                # gone from disk: only the kernel has it (the notebook's sys.path entries reach the
                # worker, so a module file in one would be importable there: issue 21)
                (mods / f"kernel_only_{k}.py").unlink()
                cell = self.run(f"%%gpu\nprint({name}.value)")
                err = _error(cell)
                # the worker says what it could not import, naming the value; never our internals
                assert err is not None and not self._ours(err), (err, self.log)
                assert "kernel_only" in err[1] or "kernel_only" in err[2], (err, self.log)
                self.failed_names.add(name)

            @rule()
            def rebind_a_failed_name(self):
                if not self.failed_names:
                    return
                name = sorted(self.failed_names)[0]
                cell = self.run(f"%%gpu\n{name} = 'fresh'\nprint({name})")
                assert _error(cell) is None, (_error(cell), self.log)
                assert cell.stdout() == "fresh\n"
                self.failed_names.discard(name)

            @rule()
            def leave_a_value_on_the_worker(self):
                name = f"kept{next(counter)}"
                assert _error(self.run(f"%%gpu --no-out\n{name} = [1, 2, 3]")) is None
                self.remote_only.add(name)

            @rule()
            def read_a_value_left_on_the_worker(self):
                if not self.remote_only:
                    return
                name = sorted(self.remote_only)[0]
                cell = self.run(f"%%gpu\nprint(sum({name}))")
                err = _error(cell)
                if err is None:
                    assert cell.stdout() == "6\n"
                else:  # its worker was released since: said so, naming the cell that made it
                    assert err[0] == "RemoteValueLost" and name in err[1], (err, self.log)
                    self.remote_only.discard(name)

            @rule()
            def stop_button(self):
                cell = kernel.submit(textwrap.dedent("""\
                    %%gpu
                    import time
                    print('started', flush=True)
                    time.sleep(60)
                    print('not reached')"""))
                self.log.append("<interrupted sleep>")
                assert kernel.wait_until(lambda: "started" in cell.stdout() or cell.done, 120)
                kernel.interrupt()
                assert kernel.wait_until(lambda: cell.done, 60), "the interrupted cell never ended"
                err = _error(cell)
                assert err is not None and err[0] == "KeyboardInterrupt", (err, self.log)
                assert "not reached" not in cell.stdout()

            @rule()
            def release(self):
                assert _error(self.run("%gpu release")) is None

        run_state_machine_as_test(Cells, settings=settings(
            max_examples=10, stateful_step_count=10, deadline=None,
            suppress_health_check=list(HealthCheck)))
    finally:
        kernel.shutdown()
