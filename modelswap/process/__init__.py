"""Process supervision: one ManagedProcess per model, owning one OS process group.

Public surface (everything else in the package is an implementation detail):

* :class:`ProcessSpec` — the settings a process acts on (mapped from the config);
* :class:`ManagedProcess` — ``ensure_ready()``, ``stop(timeout)``, ``shutdown()``,
  ``wait_ready()``, ``run()``, ``base_url()``, ``track_request()``,
  ``statistics()``, ``on_state_change()``, ``logs``;
* :class:`ProcessState`, :class:`StateChange`, :class:`ProcessStatistics`.
"""

from modelswap.process.managed import ManagedProcess
from modelswap.process.spec import ProcessSpec
from modelswap.process.state import ProcessState, ProcessStatistics, StateChange

__all__ = ["ManagedProcess", "ProcessSpec", "ProcessState", "ProcessStatistics", "StateChange"]
