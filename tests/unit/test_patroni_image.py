"""The recipe of the group members' image (images/postgres-patroni) agrees with the kit and the tests:
the official Postgres image the single server runs, Patroni at the version the kit configures, pinned
with hashes in the one requirements file that both the image and the tests' Patroni install."""

from __future__ import annotations

import re

from components import patroni
from components.local import image
from components.local.cli import ROOT
from components.postgres import PostgresSpec

RECIPE = ROOT / image.POSTGRES.context


def test_the_image_is_the_official_postgres_image_the_single_server_runs() -> None:
    dockerfile = (RECIPE / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)$", dockerfile, re.MULTILINE) == [PostgresSpec().image]
    assert re.search(r"^USER 10002:10002$", dockerfile, re.MULTILINE)


def test_patroni_is_installed_from_the_hashed_requirements_at_the_kits_version() -> None:
    dockerfile = (RECIPE / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "-r /tmp/patroni-requirements.txt" in dockerfile
    assert "COPY requirements.txt /tmp/patroni-requirements.txt" in dockerfile
    requirements = (RECIPE / "requirements.txt").read_text()
    pins = dict(re.findall(r"^([a-z0-9-]+)(?:\[[^\]]*\])?==(\S+) ", requirements, re.MULTILINE))
    assert pins["patroni"] == patroni.VERSION
    assert "psycopg" in pins and "psycopg-binary" in pins
    # every requirement carries its hashes: pip refuses the file otherwise
    assert requirements.count("==") == len(pins) and requirements.count("--hash=sha256:") >= len(pins)


def test_the_default_tag_names_both_versions() -> None:
    postgres_version = PostgresSpec().image.split(":")[1].split("-")[0]
    assert patroni.PatroniSpec().image == f"{patroni.IMAGE_REPOSITORY}:{postgres_version}-{patroni.VERSION}"
    assert image.POSTGRES.repository == patroni.IMAGE_REPOSITORY
