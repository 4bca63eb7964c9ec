"""A score file's settings said as the options that set them: what a refusal to resume names."""

from __future__ import annotations

from tracin.options import ScoreOptions
from tracin.results.store.hdf5 import setting_differences

SETTING_OPTIONS = {  # the options that set a file's settings (settings_of), and the ones its examples follow from
    "": ScoreOptions,
    "score": ScoreOptions,
    "train_index": "--train-subset",
    "test_index": "--test-subset",
}
CHECKPOINTS_SETTING = " checkpoints sha256"  # the end of a setting no option sets: MODEL's checkpoints' digest


def score_differences(stored: dict, settings: dict) -> tuple[list[str], bool]:
    """(differences said, whether a setting other than the models' checkpoints' digests differs) of a score
    file's settings and these: the digests said only where nothing else differs (they follow from
    --checkpoints or --models: round 30, S5)."""
    options = setting_differences(_without_digests(stored), _without_digests(settings), SETTING_OPTIONS)
    return options or setting_differences(stored, settings, SETTING_OPTIONS), bool(options)


def _without_digests(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if not key.endswith(CHECKPOINTS_SETTING)}
