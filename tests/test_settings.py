"""Settings survive the trip through a child process's environment."""

from __future__ import annotations

import hashlib
import os

from courier.settings import ApiKeySettings, AuthSettings, Settings, load_settings, settings_env


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_settings_env_round_trips_auth_keys_and_nested_sections(monkeypatch, tmp_path):
    original = Settings(
        data_dir=tmp_path,
        bucket_width_secs=60,
        auth=AuthSettings(
            keys=(
                ApiKeySettings(name="app", sha256=_sha("k1"), types=("PlaySong", "Search")),
                ApiKeySettings(name="ops", sha256=_sha("k2"), events_per_sec=5.0),
            ),
            admin_key_sha256=_sha("admin"),
        ),
    )
    for name in [n for n in os.environ if n.startswith("COURIER_")]:
        monkeypatch.delenv(name)
    for name, value in settings_env(original).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original
