"""Region resolution against figures read by hand from the raw inputs (see carbon/data/README.md)."""

import csv
import os
import subprocess
import sys

import pytest

from greenjupyter.carbon import regions
from greenjupyter.errors import ConfigError

LBS_PER_MWH = 0.453592  # g/kWh per lb/MWh

# Raw figures, copied from the inputs the tables are built from:
FR_EMBER_2024 = 44.18  # ember-country-intensity.json, "FRA"
NL_EMBER_2024 = 252.7  # ember-country-intensity.json, "NLD"
WORLD_EMBER_2024 = 472.94  # ember-country-intensity.json, "World"
US_CENTRAL1_GOOGLE_2025 = 431.95  # gcp-region-intensity-2025.csv, us-central1 (Iowa)
CALIFORNIA_EGRID_LBS = 394.769  # codecarbon 3.3.2 usa_emissions.json, "california" (eGRID2023 STC2ERTA)
VIRGINIA_EGRID_LBS = 539.599  # same file, "virginia"
# codecarbon canada_energy_mix.json, "quebec": natural gas 0.2 %, petroleum 0.3 %, coal 0 %, total 100.01 %;
# carbon_intensity_per_source.json: natural_gas 743, petroleum 816, coal 995 g/kWh
QUEBEC_DIRECT = (0.2 * 743 + 0.3 * 816 + 0 * 995) / 100.01
NSW_EM_2025 = 525  # CO2.js 0.19.0 electricity-maps/yearly_2025.js, "AU-NSW"


@pytest.mark.parametrize("text", ["FR", "fr", "FRA", "fra", "France", "FRANCE", "  france "])
def test_a_country_by_code_or_name_in_any_case(text):
    grid = regions.lookup(text)
    assert (grid.region, grid.name, grid.g_per_kwh) == ("FR", "France", FR_EMBER_2024)
    assert (grid.basis, grid.year, grid.pue) == ("lifecycle", 2024, None)
    assert "Ember" in grid.source


@pytest.mark.parametrize("text", ["GB", "GBR", "United Kingdom", "united kingdom", "UK"])
def test_the_united_kingdom_by_any_of_its_names(text):
    assert regions.lookup(text).region == "GB"


def test_world():
    grid = regions.lookup("world")
    assert (grid.region, grid.g_per_kwh, grid.year) == ("WORLD", WORLD_EMBER_2024, 2024)


@pytest.mark.parametrize("text", ["US-CA", "us-ca", "California", "CALIFORNIA"])
def test_a_us_state_is_egrid_converted_to_grams(text):
    grid = regions.lookup(text)
    assert grid.region == "US-CA" and grid.name == "California, United States"
    assert grid.g_per_kwh == pytest.approx(CALIFORNIA_EGRID_LBS * LBS_PER_MWH, abs=0.005)
    assert (grid.basis, grid.year) == ("direct", 2023)


@pytest.mark.parametrize("text", ["CA-QC", "ca-qc", "Quebec"])
def test_a_canadian_province_from_its_mix(text):
    grid = regions.lookup(text)
    assert grid.region == "CA-QC" and grid.name == "Quebec, Canada" and grid.basis == "direct"
    assert grid.g_per_kwh == pytest.approx(QUEBEC_DIRECT, abs=0.05)


def test_a_country_name_wins_over_a_state_of_the_same_name():
    assert regions.lookup("Georgia").region == "GE"
    assert regions.lookup("US-GA").name == "Georgia, United States"


def test_an_australian_state():
    grid = regions.lookup("new south wales")
    assert (grid.region, grid.g_per_kwh, grid.basis, grid.year) == ("AU-NSW", NSW_EM_2025, "lifecycle", 2025)


@pytest.mark.parametrize("text", ["us-central1", "gcp:us-central1", "GCP:US-CENTRAL1"])
def test_a_google_region_has_googles_own_figure(text):
    grid = regions.lookup(text)
    assert (grid.region, grid.name) == ("gcp:us-central1", "Google Cloud us-central1 (Iowa)")
    assert (grid.g_per_kwh, grid.year, grid.pue) == (US_CENTRAL1_GOOGLE_2025, 2025, 1.10)


@pytest.mark.parametrize("text", ["aws:eu-west-3", "eu-west-3", "AWS:EU-WEST-3"])
def test_an_aws_region_takes_the_grid_it_sits_on(text):
    grid = regions.lookup(text)
    assert grid.region == "aws:eu-west-3" and grid.name == "AWS eu-west-3 (Paris) → France grid"
    assert (grid.g_per_kwh, grid.basis, grid.pue) == (FR_EMBER_2024, "lifecycle", 1.15)


@pytest.mark.parametrize("text", ["azure:westeurope", "westeurope", "WestEurope"])
def test_an_azure_region_takes_the_grid_it_sits_on(text):
    grid = regions.lookup(text)
    assert grid.region == "azure:westeurope" and grid.name.endswith("→ Netherlands grid")
    assert (grid.g_per_kwh, grid.pue) == (NL_EMBER_2024, 1.18)


def test_a_region_on_a_us_state_grid():
    for code in ("aws:us-east-1", "azure:eastus"):
        grid = regions.lookup(code)
        assert grid.g_per_kwh == pytest.approx(VIRGINIA_EGRID_LBS * LBS_PER_MWH, abs=0.005)
        assert grid.name.endswith("→ Virginia, United States grid") and grid.basis == "direct"


@pytest.mark.parametrize(
    "text, suggestion",
    [
        ("Frnace", "did you mean France (FR)?"),
        ("Californa", "California, United States (US-CA)"),
        ("us-centrall1", "gcp:us-central1"),
        ("westeurop", "azure:westeurope"),
    ],
)
def test_a_misspelling_names_the_value_and_the_closest_matches(text, suggestion):
    with pytest.raises(regions.UnknownRegion) as caught:
        regions.lookup(text)
    assert f"unknown region {text!r}" in str(caught.value) and suggestion in str(caught.value)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("text", ["", "   ", "xyzzy"])
def test_empty_or_far_off_input_is_refused_with_examples(text):
    with pytest.raises(regions.UnknownRegion, match="gcp:us-central1"):
        regions.lookup(text)


def test_every_row_of_every_table_has_a_source_and_a_year():
    data = os.path.join(os.path.dirname(regions.__file__), "data")
    for name in ("countries.csv", "subnational.csv", "subnational_odbl.csv", "cloud_regions.csv"):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
        assert rows, name
        for row in rows:
            assert row["source"].strip() and 1990 < int(row["year"]) < 2100, (name, row)
            if "pue" in row:
                assert row["pue_source"].strip() and int(row["pue_year"]) and float(row["pue"]) >= 1.0
    with open(os.path.join(data, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert all(word in readme for word in ("licence", "lifecycle", "direct", "CC BY 4.0", "ODbL", "Apache-2.0"))


def test_every_cloud_region_resolves():
    data = os.path.join(os.path.dirname(regions.__file__), "data", "cloud_regions.csv")
    with open(data, encoding="utf-8") as f:
        codes = [row["code"] for row in csv.DictReader(line for line in f if not line.startswith("#"))]
    assert sum(c.startswith("aws:") for c in codes) >= 25 and sum(c.startswith("azure:") for c in codes) >= 30
    for code in codes:
        grid = regions.lookup(code)
        assert grid.region == code and grid.g_per_kwh > 0 and grid.pue and grid.basis in ("lifecycle", "direct")


def test_tables_are_read_on_the_first_lookup_not_at_import():
    # A fresh interpreter, with an audit hook recording every file opened under carbon/data.
    script = """
import sys
opened = []
def hook(event, args):
    if event == "open" and str(args[0]).endswith(".csv") and "carbon" in str(args[0]):
        opened.append(args[0])
sys.addaudithook(hook)
from greenjupyter.carbon import regions
assert regions._index is None and not opened, opened
regions.lookup("FR")
assert opened and regions._index
count = len(opened)
regions.lookup("gcp:us-central1"); regions.lookup("France")
assert len(opened) == count  # cached
"""
    subprocess.run([sys.executable, "-c", script], check=True)


def write_zoneinfo(root, zone_tab="", zone1970_tab="", links=""):
    root.mkdir(parents=True, exist_ok=True)
    (root / "zone.tab").write_text(zone_tab)
    (root / "zone1970.tab").write_text(zone1970_tab)
    (root / "tzdata.zi").write_text(links)
    return (str(root),)


def test_country_from_timezone_with_a_given_table(tmp_path):
    dirs = write_zoneinfo(
        tmp_path / "zi",
        zone_tab="# comment\nFR\t+4852+00220\tEurope/Paris\nUS\t+404251-0740023\tAmerica/New_York\tEastern\n",
        zone1970_tab="BE,LU,NL\t+5050+00420\tEurope/Brussels\n",
        links="L America/New_York US/Eastern\nL Etc/UTC UTC\n",
    )
    assert regions.country_from_timezone("Europe/Paris", dirs) == "FR"
    assert regions.country_from_timezone("America/New_York", dirs) == "US"
    assert regions.country_from_timezone("US/Eastern", dirs) == "US"  # an old name, by its link
    assert regions.country_from_timezone("Europe/Brussels", dirs) == "BE"  # zone1970.tab: first country
    assert regions.country_from_timezone("UTC", dirs) is None
    assert regions.country_from_timezone("Etc/GMT+2", dirs) is None
    assert regions.country_from_timezone("", dirs) is None
    assert regions.country_from_timezone("Europe/Paris", (str(tmp_path / "none"),)) is None


def test_country_from_timezone_with_the_installed_tz_data():
    if not any(os.path.exists(os.path.join(d, "zone.tab")) for d in regions._default_zoneinfo_dirs()):
        pytest.skip("no zone.tab on this machine")
    assert regions.country_from_timezone("Europe/Paris") == "FR"
    assert regions.country_from_timezone("America/New_York") == "US"
    assert regions.country_from_timezone("Europe/Amsterdam") == "NL"  # a link now, its own row still
    assert regions.country_from_timezone("UTC") is None
    assert regions.country_from_timezone("Etc/UTC") is None


def test_local_timezone_from_tz_then_etc_timezone_then_the_localtime_link(tmp_path):
    zone_file = tmp_path / "zoneinfo" / "Europe" / "Paris"
    zone_file.parent.mkdir(parents=True)
    zone_file.write_bytes(b"TZif")
    localtime = tmp_path / "localtime"
    localtime.symlink_to(zone_file)
    timezone = tmp_path / "timezone"
    missing = str(tmp_path / "missing")

    assert regions.local_timezone({}, missing, str(localtime)) == "Europe/Paris"
    timezone.write_text("America/New_York\n")
    assert regions.local_timezone({}, str(timezone), str(localtime)) == "America/New_York"
    assert regions.local_timezone({"TZ": "Asia/Tokyo"}, str(timezone), str(localtime)) == "Asia/Tokyo"
    assert regions.local_timezone({"TZ": ":Europe/Berlin"}, missing, missing) == "Europe/Berlin"
    assert regions.local_timezone({"TZ": "/usr/share/zoneinfo/Europe/Rome"}, missing, missing) == "Europe/Rome"
    assert regions.local_timezone({"TZ": ""}, missing, missing) is None


def test_cloud_region_from_environment():
    assert regions.cloud_region_from_environment({"AWS_REGION": "eu-west-3"}) == "aws:eu-west-3"
    assert regions.cloud_region_from_environment({"AWS_DEFAULT_REGION": "us-east-1"}) == "aws:us-east-1"
    assert regions.cloud_region_from_environment({"GOOGLE_CLOUD_REGION": "us-central1"}) == "gcp:us-central1"
    assert regions.cloud_region_from_environment({"CLOUD_ML_REGION": "europe-west4"}) == "gcp:europe-west4"
    assert regions.cloud_region_from_environment({"FUNCTION_REGION": "europe-west1"}) == "gcp:europe-west1"
    assert regions.cloud_region_from_environment({"REGION_NAME": "West Europe"}) == "azure:westeurope"
    assert regions.cloud_region_from_environment({"REGION_NAME": "Paris"}) is None  # not an Azure region
    assert regions.cloud_region_from_environment({"AWS_REGION": "mars-north-1"}) is None
    assert regions.cloud_region_from_environment({}) is None
