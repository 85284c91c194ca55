"""Workloads: task families of the length users train (1,000-10,000 optimizer steps, 30 s to
5 min a run at the default size on one CPU thread), each with a size knob.

=================  ===============  ===============================================================
family             group            what it is
=================  ===============  ===============================================================
workload_gru       workloads_dev    GRU tagging a hidden Markov chain's state, Adam, 2,000 steps
workload_signal    workloads_dev    1-D CNN waveform classifier, Adam, batch 100, 4,000 steps
workload_lm        workloads_final  byte-level causal transformer LM on stdlib packages, AdamW, 1,500 steps
workload_resnet    workloads_final  ResNet + BatchNorm on generated textures, SGD, 2,000 steps
workload_tabular   workloads_final  embedding + MLP on 60k generated rows, Adam, batch 256, 4,000 steps
=================  ===============  ===============================================================

Development decisions use ``workloads_dev`` only; neither group enters meta-training.
"""

from __future__ import annotations

from rlhpo.tasks.workloads.common import WorkloadFamily
from rlhpo.tasks.workloads.lm import WorkloadLM
from rlhpo.tasks.workloads.recurrent import WorkloadGRU
from rlhpo.tasks.workloads.resnet import WorkloadResNet
from rlhpo.tasks.workloads.signal import WorkloadSignal
from rlhpo.tasks.workloads.tabular import WorkloadTabular

WORKLOAD_FAMILIES: tuple[type[WorkloadFamily], ...] = (WorkloadGRU, WorkloadSignal, WorkloadLM, WorkloadResNet, WorkloadTabular)
WORKLOADS_DEV: tuple[str, ...] = tuple(f.name for f in WORKLOAD_FAMILIES if f.group == "workloads_dev")
WORKLOADS_FINAL: tuple[str, ...] = tuple(f.name for f in WORKLOAD_FAMILIES if f.group == "workloads_final")

__all__ = ["WORKLOAD_FAMILIES", "WORKLOADS_DEV", "WORKLOADS_FINAL", "WorkloadFamily"]
