"""Poisoning scans: label flips, backdoor triggers, clean-label poisons and backdoored foundation models.

Public API::

    scan_dataset(x, y, foundation=FoundationModel.from_path(weights), policy=ScanPolicy())
        -> DatasetScan (per-sample scores, flags, verdict, per-class evidence)
    scan_encoder(embed, probes, policy=ModelScanPolicy()) -> ModelScan (score, verdict, reversed trigger)

Attacks for tests, benchmarks and the demo's poisoned drop live in :mod:`integrity.scans.poisoning.attacks`.
"""

from integrity.scans.poisoning.dataset_scan import DatasetScan, scan_dataset
from integrity.scans.poisoning.features import FoundationModel, load_state_dict, packaged_weights, pick_device
from integrity.scans.poisoning.model_scan import ModelScan, TriggerSearch, reverse_engineer_triggers, scan_encoder
from integrity.scans.poisoning.policy import ModelScanPolicy, PolicyResult, ScanPolicy

__all__ = [
    "DatasetScan", "FoundationModel", "ModelScan", "ModelScanPolicy", "PolicyResult", "ScanPolicy", "TriggerSearch",
    "load_state_dict", "packaged_weights", "pick_device", "reverse_engineer_triggers", "scan_dataset", "scan_encoder",
]
