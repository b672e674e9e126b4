"""`rpo_train` under `accelerate launch --config_file <an FSDP config>` on CPU processes (gloo). accelerate takes its FSDP path
only for a GPU process group and reads a CPU one as plain data parallel, so this harness marks the group as a GPU one
before anything else runs; the rest is accelerate's and torch's real FSDP2 code: the wrapping of decoder layers,
sharding, the memory-saving load, gathers, clipping and checkpoints. Run by tests/test_parallel.py."""
import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType

PartialState(cpu=True)._shared_state["distributed_type"] = DistributedType.MULTI_GPU

from rpo_nb.cli import main

main(sys.argv[1:])
