"""Training: datasets from oasst exports and instruction data, and the SFT, reward-model, DPO and PPO trainers.

Importing this package is cheap and needs no torch: the dataset modules (`oasst.training.datasets`,
`oasst.training.formats`, `oasst.training.mixing`) are pure Python on top of `oasst.data`, and the trainer
modules import torch, transformers and TRL only inside the functions that train.
"""
