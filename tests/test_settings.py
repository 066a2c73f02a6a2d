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


def test_the_bucket_store_defaults_to_the_data_dir_and_takes_a_url_from_the_environment(
    monkeypatch, tmp_path
):
    from courier.storage.layout import open_layout
    from courier.storage.store import LocalStore

    s = load_settings(data_dir=tmp_path)
    assert s.resolved_store_url == str(tmp_path)
    assert s.resolved_scratch_dir == tmp_path / "_tmp"
    layout = open_layout(s)
    assert isinstance(layout.store, LocalStore) and layout.local_root == tmp_path
    monkeypatch.setenv("COURIER_STORE_URL", "s3://events/prod")
    monkeypatch.setenv("COURIER_SCRATCH_DIR", str(tmp_path / "mine"))
    s = load_settings(data_dir=tmp_path)
    assert s.resolved_store_url == "s3://events/prod"
    assert s.resolved_scratch_dir == tmp_path / "mine"
    assert settings_env(s)["COURIER_STORE_URL"] == "s3://events/prod"
