"""pdt-compile: Predictive Differential Training as an optimizer wrapper and a torch.compile transform.

    import pdt_compile as pdt
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=50)

See README.md for the compiled path (``@pdt.compile(optimizer=opt)``).
"""

from typing import TYPE_CHECKING, Any

from .config import PDTConfig, PDTOptions
from .dmd import forecast
from .mask import consistency_mask
from .optim import PDT
from .runtime.checkpoint import plain_state_dict
from .runtime.schedule import Phase
from .runtime.stats import Stats

__all__ = ["PDT", "PDTConfig", "PDTOptions", "Phase", "Stats", "compile", "consistency_mask", "forecast", "plain_state_dict",
           "set_optimizer_state_dict"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # what the lazy imports below give, for type checkers and IDEs
    from .api import compile
    from .distributed_checkpoint import set_optimizer_state_dict


def __getattr__(name: str) -> Any:
    if name == "compile":  # imported on first use: keeps `import pdt_compile` light
        from .api import compile

        return compile
    if name == "set_optimizer_state_dict":  # imports torch.distributed.checkpoint
        from .distributed_checkpoint import set_optimizer_state_dict

        return set_optimizer_state_dict
    raise AttributeError(f"module 'pdt_compile' has no attribute {name!r}")
