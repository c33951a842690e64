"""Regenerate greenjupyter/carbon/data/ (grid carbon intensity tables and their README).

Inputs (only facts are taken from them; see the README this script writes):
  --ember       Ember yearly grid intensities as extracted by the Green Web Foundation's CO2.js
                (``data/output/average-intensities.json``), one entry per country plus aggregates
  --gcp         Google Cloud ``region-carbon-info`` ``data/yearly/2025.csv``
  --codecarbon  the ``codecarbon`` package directory from its wheel (MIT):
                ``pip download --no-deps codecarbon==3.3.2 -d T && unzip -q T/codecarbon-*.whl -d T/x``
  --co2js       the ``@tgwf/co2`` npm package directory: ``npm pack @tgwf/co2@0.19.0 && tar xzf tgwf-co2-0.19.0.tgz``
Country names and ISO codes come from ``pycountry`` (``pip install pycountry``; 26.2.16 was used),
here only: greenjupyter never imports it.

The region → location tables for AWS, Azure and Google Cloud below are written by hand from the
providers' public region lists.
"""

import argparse
import csv
import json
import re
from pathlib import Path

import pycountry

OUT = Path(__file__).resolve().parents[1] / "greenjupyter" / "carbon" / "data"

LBS_PER_MWH_TO_G_PER_KWH = 0.453592  # 1 lb = 453.592 g and 1 MWh = 1000 kWh
EM_YEAR = 2025  # latest full year of Electricity Maps data shipped in CO2.js 0.19.0
REGION_LIST_YEAR = 2025  # the providers' region lists, as the location tables below record them

# Provider PUE: (value, year, short citation kept on each row). Full citations are in the README.
PUE = {
    "aws": (1.15, 2024, "AWS sustainability reporting"),
    "gcp": (1.10, 2023, "Google 2024 Environmental Report"),
    "azure": (1.18, 2022, "Microsoft Azure blog 2022"),
}
PUE_CITATIONS = {
    "aws": "AWS, global PUE for 2024 (figure and year as given in the project's reference notes)",
    "gcp": "Google, average annual PUE of its data centres in 2023 (Google 2024 Environmental Report)",
    "azure": "Microsoft, global datacenter PUE of about 1.18 (figure from the project's reference notes, "
             "which give no year; 2022 is the year Microsoft first published its PUE figures, on the Azure "
             "blog in April 2022, and has not been checked against Microsoft's current page)",
}

# Ember codes that ISO 3166 does not assign: Kosovo's XK is the user-assigned code in common use.
NON_ISO = {"XKX": ("XK", "Kosovo")}
# A few everyday names that neither Ember nor ISO uses.
EXTRA_NAMES = {
    "GB": ["UK", "Great Britain", "Britain", "England", "Scotland", "Wales", "Northern Ireland"],
    "US": ["USA"],
    "NL": ["Holland"],
    "TR": ["Turkey"],
    "CZ": ["Czech Republic"],
    "CI": ["Ivory Coast"],
    "MM": ["Burma"],
    "MO": ["Macau"],
}

# Canadian provinces and territories as CodeCarbon names them → ISO 3166-2 code.
CA_PROVINCES = {
    "alberta": "AB", "british columbia": "BC", "manitoba": "MB", "new brunswick": "NB",
    "newfoundland and labrador": "NL", "northwest territories": "NT", "nova scotia": "NS",
    "nunavut": "NU", "ontario": "ON", "prince edward island": "PE", "quebec": "QC",
    "saskatchewan": "SK", "yukon": "YT",
}
# CodeCarbon's mix keys → keys of its carbon_intensity_per_source.json. Only fossil sources
# emit at the stack; every other source counts 0 for direct emissions.
FOSSIL_SOURCES = {"coal": "coal", "petroleum": "petroleum", "naturalGas": "natural_gas"}

AU_STATES = ("AU-NSW", "AU-NT", "AU-QLD", "AU-SA", "AU-TAS", "AU-VIC", "AU-WA")

# Google Cloud region → the grid it sits on (location from Google's list of regions).
GCP_GRID = {
    "africa-south1": "ZA", "asia-east1": "TW", "asia-east2": "HK", "asia-northeast1": "JP",
    "asia-northeast2": "JP", "asia-northeast3": "KR", "asia-south1": "IN", "asia-south2": "IN",
    "asia-southeast1": "SG", "asia-southeast2": "ID", "asia-southeast3": "TH",
    "australia-southeast1": "AU-NSW", "australia-southeast2": "AU-VIC", "europe-central2": "PL",
    "europe-north1": "FI", "europe-north2": "SE", "europe-southwest1": "ES", "europe-west1": "BE",
    "europe-west2": "GB", "europe-west3": "DE", "europe-west4": "NL", "europe-west5": "",
    "europe-west6": "CH", "europe-west8": "IT", "europe-west9": "FR", "europe-west10": "DE",
    "europe-west12": "IT", "me-central1": "QA", "me-central2": "SA", "me-west1": "IL",
    "northamerica-northeast1": "CA-QC", "northamerica-northeast2": "CA-ON", "northamerica-south1": "MX",
    "southamerica-east1": "BR", "southamerica-west1": "CL", "us-central1": "US-IA",
    "us-central2": "US-OK", "us-east1": "US-SC", "us-east2": "US-GA", "us-east4": "US-VA",
    "us-east5": "US-OH", "us-east7": "", "us-south1": "US-TX", "us-west1": "US-OR",
    "us-west2": "US-CA", "us-west3": "US-UT", "us-west4": "US-NV",
}  # "": no single grid (europe-west5: location not published; us-east7: Alabama and Tennessee)

# AWS region → (location, grid), from AWS's public list of regions.
AWS_REGIONS = {
    "us-east-1": ("N. Virginia", "US-VA"), "us-east-2": ("Ohio", "US-OH"),
    "us-west-1": ("N. California", "US-CA"), "us-west-2": ("Oregon", "US-OR"),
    "ca-central-1": ("Montréal", "CA-QC"), "ca-west-1": ("Calgary", "CA-AB"),
    "mx-central-1": ("Mexico", "MX"), "sa-east-1": ("São Paulo", "BR"),
    "eu-west-1": ("Ireland", "IE"), "eu-west-2": ("London", "GB"), "eu-west-3": ("Paris", "FR"),
    "eu-central-1": ("Frankfurt", "DE"), "eu-central-2": ("Zurich", "CH"),
    "eu-north-1": ("Stockholm", "SE"), "eu-south-1": ("Milan", "IT"), "eu-south-2": ("Spain", "ES"),
    "il-central-1": ("Tel Aviv", "IL"), "me-south-1": ("Bahrain", "BH"), "me-central-1": ("UAE", "AE"),
    "af-south-1": ("Cape Town", "ZA"), "ap-east-1": ("Hong Kong", "HK"), "ap-east-2": ("Taipei", "TW"),
    "ap-south-1": ("Mumbai", "IN"), "ap-south-2": ("Hyderabad", "IN"),
    "ap-northeast-1": ("Tokyo", "JP"), "ap-northeast-2": ("Seoul", "KR"), "ap-northeast-3": ("Osaka", "JP"),
    "ap-southeast-1": ("Singapore", "SG"), "ap-southeast-2": ("Sydney", "AU-NSW"),
    "ap-southeast-3": ("Jakarta", "ID"), "ap-southeast-4": ("Melbourne", "AU-VIC"),
    "ap-southeast-5": ("Malaysia", "MY"), "ap-southeast-7": ("Thailand", "TH"),
}

# Azure region → (location, grid), from Microsoft's public list of Azure regions.
AZURE_REGIONS = {
    "eastus": ("Virginia", "US-VA"), "eastus2": ("Virginia", "US-VA"), "centralus": ("Iowa", "US-IA"),
    "northcentralus": ("Illinois", "US-IL"), "southcentralus": ("Texas", "US-TX"),
    "westcentralus": ("Wyoming", "US-WY"), "westus": ("California", "US-CA"),
    "westus2": ("Washington", "US-WA"), "westus3": ("Arizona", "US-AZ"),
    "canadacentral": ("Toronto", "CA-ON"), "canadaeast": ("Quebec City", "CA-QC"),
    "mexicocentral": ("Querétaro", "MX"), "brazilsouth": ("São Paulo State", "BR"),
    "northeurope": ("Ireland", "IE"), "westeurope": ("Netherlands", "NL"),
    "uksouth": ("London", "GB"), "ukwest": ("Cardiff", "GB"),
    "francecentral": ("Paris", "FR"), "francesouth": ("Marseille", "FR"),
    "germanywestcentral": ("Frankfurt", "DE"), "germanynorth": ("Berlin", "DE"),
    "switzerlandnorth": ("Zürich", "CH"), "switzerlandwest": ("Geneva", "CH"),
    "norwayeast": ("Oslo", "NO"), "norwaywest": ("Stavanger", "NO"), "swedencentral": ("Gävle", "SE"),
    "polandcentral": ("Warsaw", "PL"), "italynorth": ("Milan", "IT"), "spaincentral": ("Madrid", "ES"),
    "eastasia": ("Hong Kong", "HK"), "southeastasia": ("Singapore", "SG"),
    "japaneast": ("Tokyo, Saitama", "JP"), "japanwest": ("Osaka", "JP"),
    "koreacentral": ("Seoul", "KR"), "koreasouth": ("Busan", "KR"),
    "centralindia": ("Pune", "IN"), "southindia": ("Chennai", "IN"), "westindia": ("Mumbai", "IN"),
    "australiaeast": ("New South Wales", "AU-NSW"), "australiasoutheast": ("Victoria", "AU-VIC"),
    "australiacentral": ("Canberra", "AU-NSW"),  # the ACT draws on the NSW region of the grid
    "southafricanorth": ("Johannesburg", "ZA"), "southafricawest": ("Cape Town", "ZA"),
    "uaenorth": ("Dubai", "AE"), "uaecentral": ("Abu Dhabi", "AE"), "qatarcentral": ("Doha", "QA"),
    "israelcentral": ("Israel", "IL"), "newzealandnorth": ("Auckland", "NZ"),
    "indonesiacentral": ("Jakarta", "ID"), "malaysiawest": ("Kuala Lumpur", "MY"),
}


def country_rows(ember_path):
    """Every country in the Ember extract, plus the World aggregate; other aggregates are left out."""
    rows = []
    for entry in json.loads(Path(ember_path).read_text(encoding="utf-8")).values():
        alpha3, value, year = entry["country_code"], entry["emissions_intensity_gco2_per_kwh"], entry["year"]
        if not alpha3:
            if entry["country_or_region"] == "World":
                rows.append(["WORLD", "", "World", round(value, 2), year, "lifecycle", f"Ember {year} via CO2.js", ""])
            continue
        if alpha3 in NON_ISO:
            alpha2, name = NON_ISO[alpha3]
            other = []
        else:
            iso = pycountry.countries.get(alpha_3=alpha3)
            alpha2 = iso.alpha_2
            name = getattr(iso, "common_name", None) or iso.name
            other = [iso.name, getattr(iso, "official_name", "")]
        other += [entry["country_or_region"], *EXTRA_NAMES.get(alpha2, [])]
        other = [n for n in dict.fromkeys(other) if n and n != name]
        source = f"Ember {year} via CO2.js"
        rows.append([alpha2, alpha3, name, round(value, 2), year, "lifecycle", source, ";".join(other)])
    return sorted(rows, key=lambda r: (r[0] != "WORLD", r[0]))


def us_state_rows(codecarbon):
    """eGRID2023 state output rates (CO2e, lbs/MWh) → g/kWh. Combustion only: basis 'direct'."""
    data = json.loads((codecarbon / "data/private_infra/2023/usa_emissions.json").read_text(encoding="utf-8"))
    year = data["_source"]["year"]
    rows = []
    for key, entry in data.items():
        if key.startswith("_") or key == "usa":  # metadata; the national figure comes from Ember
            continue
        code = "US-" + entry["regionCode"]
        g = round(entry["emissions"] * LBS_PER_MWH_TO_G_PER_KWH, 2)
        name = pycountry.subdivisions.get(code=code).name
        rows.append([code, name, g, year, "direct", "EPA eGRID2023 via CodeCarbon"])
    return rows


def canada_rows(codecarbon):
    """Provincial generation shares × CodeCarbon's per-fuel combustion factors (fossil fuels only)."""
    infra = codecarbon / "data/private_infra"
    mixes = json.loads((infra / "2023/canada_energy_mix.json").read_text(encoding="utf-8"))
    factors = json.loads((infra / "carbon_intensity_per_source.json").read_text(encoding="utf-8"))
    rows = []
    for province, mix in mixes.items():
        code = "CA-" + CA_PROVINCES[province]
        # shares are percentages whose total is not always exactly 100: divide by the stated total
        g = sum(mix[key] * factors[factor] for key, factor in FOSSIL_SOURCES.items()) / mix["total"]
        name = pycountry.subdivisions.get(code=code).name
        rows.append([code, name, round(g, 1), 2023, "direct", "CodeCarbon provincial mix x fuel factors"])
    return rows


def read_js_object(path):
    """The object literal of CO2.js's ``const data = {...}`` module as a dict."""
    text = Path(path).read_text(encoding="utf-8")
    text = re.sub(r"\\x([0-9A-Fa-f]{2})", r"\\u00\1", text)  # JS \xE9 is not JSON
    start = text.index("{", text.index("const data ="))
    return json.JSONDecoder().raw_decode(text, start)[0]  # stops at the literal's closing brace


def australia_rows(co2js):
    """Electricity Maps yearly averages for the Australian states (lifecycle), ODbL: kept in their own file."""
    data = read_js_object(co2js / f"dist/esm/data/electricity-maps/yearly_{EM_YEAR}.js")
    rows = []
    for code in AU_STATES:
        zone = data[code]
        assert zone["carbonIntensity"]["unit"] == "gCO2eq/kWh"
        rows.append([code, zone["zone"]["zoneName"], zone["carbonIntensity"]["value"], EM_YEAR,
                     "lifecycle", f"Electricity Maps {EM_YEAR} via CO2.js"])
    return rows


def cloud_rows(gcp_path):
    """Google regions with Google's own grid figure; AWS and Azure regions with the grid they sit on."""
    rows = []
    with open(gcp_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            region = r["Google Cloud Region"]
            location = "" if r["Location"] == "N/A" else r["Location"]
            rows.append([f"gcp:{region}", location, GCP_GRID[region],
                         float(r["Grid carbon intensity (gCO2eq / kWh)"]), "direct", 2025,
                         "Google Cloud region-carbon-info 2025", *PUE["gcp"]])
    for provider, regions, citation in (("aws", AWS_REGIONS, "AWS region list"),
                                         ("azure", AZURE_REGIONS, "Azure region list")):
        for region, (location, grid) in regions.items():
            rows.append([f"{provider}:{region}", location, grid, "", "", REGION_LIST_YEAR, citation, *PUE[provider]])
    return rows


def write_csv(name, comment, header, rows):
    with open(OUT / name, "w", newline="", encoding="utf-8") as f:
        f.writelines(f"# {line}\n" for line in comment)
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT / name} ({(OUT / name).stat().st_size / 1024:.1f} KB)")


def check_grids(cloud, countries, subnational):
    known = {r[0] for r in countries} | {r[0] for r in subnational}
    missing = {r[2] for r in cloud if r[2] and r[2] not in known}
    if missing:
        raise SystemExit(f"cloud regions map to grids no table has: {sorted(missing)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ember", required=True)
    parser.add_argument("--gcp", required=True)
    parser.add_argument("--codecarbon", required=True, type=Path)
    parser.add_argument("--co2js", required=True, type=Path)
    args = parser.parse_args()

    countries = country_rows(args.ember)
    us, canada = us_state_rows(args.codecarbon), canada_rows(args.codecarbon)
    north_america = us + canada
    australia = australia_rows(args.co2js)
    cloud = cloud_rows(args.gcp)
    check_grids(cloud, countries, north_america + australia)

    OUT.mkdir(parents=True, exist_ok=True)
    sub_header = ["code", "name", "g_per_kwh", "year", "basis", "source"]
    write_csv("countries.csv",
              ["Grid carbon intensity by country, gCO2e/kWh, lifecycle. Source: Ember (CC BY 4.0) via Green Web",
               "Foundation CO2.js; latest year per country. Names and codes: ISO 3166 (pycountry). See README.md."],
              ["alpha2", "alpha3", "name", "g_per_kwh", "year", "basis", "source", "other_names"], countries)
    write_csv("subnational.csv",
              ["US states: EPA eGRID2023 output rates (public domain) via CodeCarbon (MIT), direct emissions.",
               "Canadian provinces: CodeCarbon provincial mix x fuel factors, direct emissions. See README.md."],
              sub_header, north_america)
    write_csv("subnational_odbl.csv",
              ["Australian states: Electricity Maps yearly data via CO2.js, lifecycle. Licence: ODbL 1.0",
               "(this file only); attribution: Electricity Maps. See README.md."],
              sub_header, australia)
    write_csv("cloud_regions.csv",
              ["Cloud regions: Google's grid intensity for its regions (Apache-2.0); AWS and Azure regions map",
               "to the grid of their location (providers' public region lists). PUE per provider. See README.md."],
              ["code", "location", "grid", "g_per_kwh", "basis", "year", "source", "pue", "pue_year", "pue_source"],
              cloud)
    write_readme(len(countries), len(us), len(canada), len(australia), cloud)


def write_readme(n_countries, n_us, n_canada, n_australia, cloud):
    count = {p: sum(r[0].startswith(p + ":") for r in cloud) for p in ("gcp", "aws", "azure")}
    pue_lines = "\n".join(f"| {p} | {v} | {y} | {PUE_CITATIONS[p]} |" for p, (v, y, _) in PUE.items())
    text = f"""# Grid carbon intensity tables

Generated by `scripts/build_carbon_tables.py` (see its docstring for the exact inputs); do not edit by
hand. Nothing here is read at import or at `%load_ext`: `greenjupyter.carbon.regions` reads the tables
on the first lookup. Values are facts taken from the sources below; no code or prose is copied.

**Lifecycle vs direct.** *Lifecycle* figures count the whole life of the plants and fuels (mining,
construction, methane leaks...) as well as combustion; *direct* figures count only what leaves the
stack when electricity is generated. Direct figures are lower, sometimes much lower for grids with hydro,
nuclear or gas. Every row says which it is in its `basis` column; compare like with like.

| file | rows | what | source | year | basis | licence |
|---|---|---|---|---|---|---|
| `countries.csv` | {n_countries} | gCO2e/kWh per country (ISO alpha-2, alpha-3, name, other names), plus a `WORLD` row (the world aggregate, 472.94 for 2024) | Ember, Yearly Electricity Data, as extracted by the Green Web Foundation's CO2.js (`data/output/average-intensities.json`, commit 27cbe83); names and codes from ISO 3166 via `pycountry` (Debian iso-codes; LGPL-2.1, used by the build script only, never shipped or imported), Kosovo as `XK` (user-assigned code in common use) | latest per country: 2022–2024 (`year` column) | lifecycle | Ember data: CC BY 4.0 (CO2.js's README still says CC BY-SA 4.0); attribute Ember and CO2.js. CO2.js code: Apache-2.0 (not used) |
| `subnational.csv` (US) | {n_us} | US states and DC | EPA eGRID2023, state annual CO2-equivalent total output emission rate (field `STC2ERTA`, lbs/MWh), from CodeCarbon's `data/private_infra/2023/usa_emissions.json` (codecarbon 3.3.2); converted with 1 lb/MWh = 0.453592 g/kWh | 2023 | direct (emissions from generation in the state) | US federal data: public domain; CodeCarbon: MIT, © CodeCarbon authors |
| `subnational.csv` (Canada) | {n_canada} | Canadian provinces and territories | computed: for each province, Σ over coal, petroleum and natural gas of (share of generation, %) × (fuel's combustion factor: coal 995, petroleum 816, natural gas 743 g/kWh), ÷ the mix's stated total (%). Hydro, nuclear, wind, solar, biomass and other sources count 0 (no stack emissions; biogenic CO2 of biomass not counted). Shares: CodeCarbon's `data/private_infra/2023/canada_energy_mix.json`; factors: CodeCarbon's `carbon_intensity_per_source.json` (which cites the `energy-usage` project for them). The file does not name where the shares come from | 2023 (CodeCarbon's data year) | direct | CodeCarbon: MIT |
| `subnational_odbl.csv` | {n_australia} | Australian states (the ACT is part of the NSW grid region) | Electricity Maps, yearly carbon intensity {EM_YEAR}, as republished in CO2.js 0.19.0 (`dist/esm/data/electricity-maps/yearly_{EM_YEAR}.js`) | {EM_YEAR} | lifecycle | **ODbL 1.0** (Open Database License): attribute Electricity Maps; this file, as a derived database, stays under the ODbL. Kept apart from the other tables so that it can be dropped; without it, Australian cloud regions fall back to the Australia row of `countries.csv` |
| `cloud_regions.csv` | {len(cloud)} | Google Cloud ({count["gcp"]}), AWS ({count["aws"]}) and Azure ({count["azure"]}) regions: location, the grid they map to, PUE | Google: `GoogleCloudPlatform/region-carbon-info` `data/yearly/2025.csv` (grid carbon intensity, described there as the average operational gross emissions of the local grid). AWS and Azure publish no per-region grid figure: their rows name the grid of the region's location (a country or state row above), taken from the providers' public region lists | Google: 2025; AWS/Azure: region lists as of {REGION_LIST_YEAR} | Google: direct (operational); AWS/Azure: that of the grid row | Google data: Apache-2.0; region locations: facts |

Power usage effectiveness (facility energy ÷ IT energy), one figure per provider, repeated on each
of its rows (`pue`, `pue_year`, `pue_source`):

| provider | PUE | year | source |
|---|---|---|---|
{pue_lines}

A laptop or workstation has no facility overhead (PUE 1.0); these figures apply only to cloud regions.

Not covered: other Ember aggregates (EU, Europe, OECD...), US balancing-authority or eGRID subregions
(a state's rate averages its plants, not the grid it trades on), European subnational zones, and Google
regions without a single location (`europe-west5`, location not published; `us-east7`, Alabama and
Tennessee), which keep Google's figure but map to no grid row.
"""
    (OUT / "README.md").write_text(text, encoding="utf-8")
    print(f"wrote {OUT / 'README.md'}")


if __name__ == "__main__":
    main()
