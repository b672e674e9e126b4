"""`rpo_train` whose loss is NaN on the last process only, at its second contrast batch (for the no-hang test)."""
import sys

import rpo_nb.cli as cli
import rpo_nb.train as T

real, calls = T.batch_loss, []


def nan_on_last_rank(*a, **k):
    from accelerate import PartialState
    loss, m = real(*a, **k)
    calls.append(1)
    state = PartialState()
    if len(calls) == 2 and state.process_index == state.num_processes - 1: loss = loss * float("nan")
    return loss, m


T.batch_loss = nan_on_last_rank
cli.main(sys.argv[1:])
