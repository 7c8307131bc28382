"""The baseline stage: stored baselines, one reviewable JSON file per scenario and release.

Cut by concern:

- :mod:`~perfgate.baseline.files`: read, list, resolve, store (atomically, under a lock) and
  promote baseline files, through :mod:`perfgate.store`;
- :mod:`~perfgate.baseline.fingerprints`: the environment a run was measured in, and whether two
  environments are comparable;
- :mod:`~perfgate.baseline.compare`: two baselines side by side;
- :mod:`~perfgate.baseline.text`: what ``perfgate baseline list|show|diff`` print.

The names below are what the pipeline, the CLI and the tests use (``baseline.store_baseline``);
tunables such as ``files.LOCK_TIMEOUT_S`` live (and are patched) in their own module.
"""

from perfgate.baseline.compare import BaselineDiff, StepDiff, diff
from perfgate.baseline.files import (
    BASELINE_KIND,
    REFERENCE_FILE,
    BaselineScan,
    StoredBaseline,
    baseline_path,
    check_can_store,
    list_baselines,
    load_baseline,
    mark_reference,
    previous_baseline,
    promote,
    publish_baseline,
    read_reference,
    read_result,
    resolve_baseline,
    scan_baselines,
    scan_store,
    scenario_names,
    store_baseline,
)
from perfgate.baseline.fingerprints import (
    comparability,
    fingerprint,
    fingerprint_id,
    same_scenario,
    scenario_change_text,
    scenario_changes,
    slo_text,
)
from perfgate.baseline.text import format_diff, format_list, format_show, list_record, show_json
from perfgate.errors import BaselineError

__all__ = [
    "BASELINE_KIND",
    "REFERENCE_FILE",
    "BaselineDiff",
    "BaselineError",
    "BaselineScan",
    "StepDiff",
    "StoredBaseline",
    "baseline_path",
    "check_can_store",
    "comparability",
    "diff",
    "fingerprint",
    "fingerprint_id",
    "format_diff",
    "format_list",
    "format_show",
    "list_baselines",
    "list_record",
    "load_baseline",
    "mark_reference",
    "previous_baseline",
    "promote",
    "publish_baseline",
    "read_reference",
    "read_result",
    "resolve_baseline",
    "same_scenario",
    "scan_baselines",
    "scan_store",
    "scenario_change_text",
    "scenario_changes",
    "scenario_names",
    "show_json",
    "slo_text",
    "store_baseline",
]
