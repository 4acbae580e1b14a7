"""Country and US-state tables for customer-information normalization, with their lookups.

``ISO_3166`` is the full ISO 3166-1 list (249 entries, one ``alpha-2 alpha-3 English name`` a
line) plus Kosovo's widely used user-assigned ``XK``/``XKX``, embedded so we need no pycountry.
``ALIASES`` adds the other names people type into a CRM's country field (former and formal names,
"UK", and the names used in the main European markets). ``US_STATES`` lists the ANSI/USPS codes
of the 50 states, DC and the inhabited territories.

Lookups compare a *key*: casefolded, accents and a leading "the" dropped, letters and digits only,
so "Côte d'Ivoire", "cote divoire" and "COTE D'IVOIRE" are the same name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from leadrelay.meta.field_rules import visible

ISO_3166: Final = """
AD AND Andorra
AE ARE United Arab Emirates
AF AFG Afghanistan
AG ATG Antigua and Barbuda
AI AIA Anguilla
AL ALB Albania
AM ARM Armenia
AO AGO Angola
AQ ATA Antarctica
AR ARG Argentina
AS ASM American Samoa
AT AUT Austria
AU AUS Australia
AW ABW Aruba
AX ALA Åland Islands
AZ AZE Azerbaijan
BA BIH Bosnia and Herzegovina
BB BRB Barbados
BD BGD Bangladesh
BE BEL Belgium
BF BFA Burkina Faso
BG BGR Bulgaria
BH BHR Bahrain
BI BDI Burundi
BJ BEN Benin
BL BLM Saint Barthélemy
BM BMU Bermuda
BN BRN Brunei
BO BOL Bolivia
BQ BES Caribbean Netherlands
BR BRA Brazil
BS BHS Bahamas
BT BTN Bhutan
BV BVT Bouvet Island
BW BWA Botswana
BY BLR Belarus
BZ BLZ Belize
CA CAN Canada
CC CCK Cocos Islands
CD COD Democratic Republic of the Congo
CF CAF Central African Republic
CG COG Congo
CH CHE Switzerland
CI CIV Côte d'Ivoire
CK COK Cook Islands
CL CHL Chile
CM CMR Cameroon
CN CHN China
CO COL Colombia
CR CRI Costa Rica
CU CUB Cuba
CV CPV Cabo Verde
CW CUW Curaçao
CX CXR Christmas Island
CY CYP Cyprus
CZ CZE Czechia
DE DEU Germany
DJ DJI Djibouti
DK DNK Denmark
DM DMA Dominica
DO DOM Dominican Republic
DZ DZA Algeria
EC ECU Ecuador
EE EST Estonia
EG EGY Egypt
EH ESH Western Sahara
ER ERI Eritrea
ES ESP Spain
ET ETH Ethiopia
FI FIN Finland
FJ FJI Fiji
FK FLK Falkland Islands
FM FSM Micronesia
FO FRO Faroe Islands
FR FRA France
GA GAB Gabon
GB GBR United Kingdom
GD GRD Grenada
GE GEO Georgia
GF GUF French Guiana
GG GGY Guernsey
GH GHA Ghana
GI GIB Gibraltar
GL GRL Greenland
GM GMB Gambia
GN GIN Guinea
GP GLP Guadeloupe
GQ GNQ Equatorial Guinea
GR GRC Greece
GS SGS South Georgia and the South Sandwich Islands
GT GTM Guatemala
GU GUM Guam
GW GNB Guinea-Bissau
GY GUY Guyana
HK HKG Hong Kong
HM HMD Heard Island and McDonald Islands
HN HND Honduras
HR HRV Croatia
HT HTI Haiti
HU HUN Hungary
ID IDN Indonesia
IE IRL Ireland
IL ISR Israel
IM IMN Isle of Man
IN IND India
IO IOT British Indian Ocean Territory
IQ IRQ Iraq
IR IRN Iran
IS ISL Iceland
IT ITA Italy
JE JEY Jersey
JM JAM Jamaica
JO JOR Jordan
JP JPN Japan
KE KEN Kenya
KG KGZ Kyrgyzstan
KH KHM Cambodia
KI KIR Kiribati
KM COM Comoros
KN KNA Saint Kitts and Nevis
KP PRK North Korea
KR KOR South Korea
KW KWT Kuwait
KY CYM Cayman Islands
KZ KAZ Kazakhstan
LA LAO Laos
LB LBN Lebanon
LC LCA Saint Lucia
LI LIE Liechtenstein
LK LKA Sri Lanka
LR LBR Liberia
LS LSO Lesotho
LT LTU Lithuania
LU LUX Luxembourg
LV LVA Latvia
LY LBY Libya
MA MAR Morocco
MC MCO Monaco
MD MDA Moldova
ME MNE Montenegro
MF MAF Saint Martin
MG MDG Madagascar
MH MHL Marshall Islands
MK MKD North Macedonia
ML MLI Mali
MM MMR Myanmar
MN MNG Mongolia
MO MAC Macao
MP MNP Northern Mariana Islands
MQ MTQ Martinique
MR MRT Mauritania
MS MSR Montserrat
MT MLT Malta
MU MUS Mauritius
MV MDV Maldives
MW MWI Malawi
MX MEX Mexico
MY MYS Malaysia
MZ MOZ Mozambique
NA NAM Namibia
NC NCL New Caledonia
NE NER Niger
NF NFK Norfolk Island
NG NGA Nigeria
NI NIC Nicaragua
NL NLD Netherlands
NO NOR Norway
NP NPL Nepal
NR NRU Nauru
NU NIU Niue
NZ NZL New Zealand
OM OMN Oman
PA PAN Panama
PE PER Peru
PF PYF French Polynesia
PG PNG Papua New Guinea
PH PHL Philippines
PK PAK Pakistan
PL POL Poland
PM SPM Saint Pierre and Miquelon
PN PCN Pitcairn
PR PRI Puerto Rico
PS PSE Palestine
PT PRT Portugal
PW PLW Palau
PY PRY Paraguay
QA QAT Qatar
RE REU Réunion
RO ROU Romania
RS SRB Serbia
RU RUS Russia
RW RWA Rwanda
SA SAU Saudi Arabia
SB SLB Solomon Islands
SC SYC Seychelles
SD SDN Sudan
SE SWE Sweden
SG SGP Singapore
SH SHN Saint Helena
SI SVN Slovenia
SJ SJM Svalbard and Jan Mayen
SK SVK Slovakia
SL SLE Sierra Leone
SM SMR San Marino
SN SEN Senegal
SO SOM Somalia
SR SUR Suriname
SS SSD South Sudan
ST STP Sao Tome and Principe
SV SLV El Salvador
SX SXM Sint Maarten
SY SYR Syria
SZ SWZ Eswatini
TC TCA Turks and Caicos Islands
TD TCD Chad
TF ATF French Southern Territories
TG TGO Togo
TH THA Thailand
TJ TJK Tajikistan
TK TKL Tokelau
TL TLS Timor-Leste
TM TKM Turkmenistan
TN TUN Tunisia
TO TON Tonga
TR TUR Turkey
TT TTO Trinidad and Tobago
TV TUV Tuvalu
TW TWN Taiwan
TZ TZA Tanzania
UA UKR Ukraine
UG UGA Uganda
UM UMI United States Minor Outlying Islands
US USA United States
UY URY Uruguay
UZ UZB Uzbekistan
VA VAT Vatican City
VC VCT Saint Vincent and the Grenadines
VE VEN Venezuela
VG VGB British Virgin Islands
VI VIR US Virgin Islands
VN VNM Vietnam
VU VUT Vanuatu
WF WLF Wallis and Futuna
WS WSM Samoa
YE YEM Yemen
YT MYT Mayotte
ZA ZAF South Africa
ZM ZMB Zambia
ZW ZWE Zimbabwe
XK XKX Kosovo
"""

# Additional names per alpha-2 code, separated by ";" (a trailing backslash continues the line).
ALIASES: Final = """
AE UAE; Emirates; Émirats arabes unis
AT Österreich; Autriche
BA Bosnia
BE België; Belgique; Belgien; Bélgica
BN Brunei Darussalam
BO Bolivia, Plurinational State of
BQ Bonaire, Sint Eustatius and Saba; Bonaire
BR Brasil; Brésil
CD Congo, The Democratic Republic of the; DR Congo; DRC; Congo-Kinshasa; RDC
CG Republic of the Congo; Congo-Brazzaville
CH Schweiz; Suisse; Svizzera; Suiza
CI Ivory Coast
CN PRC; Chine
CV Cape Verde
CZ Czech Republic; République tchèque
DE Deutschland; Allemagne; Alemania; Germania
DK Danmark; Danemark
DZ Algérie
ES España; Espagne; Spanien; Spagna
FI Suomi; Finlande
FK Falkland Islands (Malvinas); Malvinas
FM Micronesia, Federated States of
FR Frankreich; Francia
GB UK; U.K.; Great Britain; Britain; England; Scotland; Wales; Northern Ireland; \
United Kingdom of Great Britain and Northern Ireland; Royaume-Uni; Reino Unido; Regno Unito; \
Großbritannien; Vereinigtes Königreich
GR Hellas; Grèce; Griechenland
HR Hrvatska; Croatie
IE Éire; Irlande; Irland
IN Inde
IR Iran, Islamic Republic of
IT Italia; Italie; Italien
JP Japon
KP Korea, Democratic People's Republic of; Democratic People's Republic of Korea; DPRK
KR Korea; Korea, Republic of; Republic of Korea; Corée du Sud
LA Lao People's Democratic Republic
LU Luxemburg
MA Maroc
MD Moldova, Republic of
MF Saint Martin (French part)
MK Macedonia
MM Burma
MO Macau
MX México; Mexique
NL Holland; The Netherlands; Nederland; Pays-Bas; Niederlande; Países Bajos; Paesi Bassi
NO Norge; Norvège
PL Polska; Pologne; Polen
PS Palestine, State of; Palestinian Territories
PT Portogallo
RU Russian Federation; Russie; Russland
SE Sverige; Suède; Schweden
SH Saint Helena, Ascension and Tristan da Cunha
SN Sénégal
SX Sint Maarten (Dutch part)
SY Syrian Arab Republic
SZ Swaziland
TL East Timor
TN Tunisie
TR Türkiye; Turquie; Türkei
TW Taiwan, Province of China
TZ Tanzania, United Republic of
US USA; U.S.; U.S.A.; America; United States of America; États-Unis; Vereinigte Staaten; \
Estados Unidos; Stati Uniti
VA Holy See; Holy See (Vatican City State); Vatican
VE Venezuela, Bolivarian Republic of
VG Virgin Islands, British
VI Virgin Islands, U.S.
VN Viet Nam
"""

US_STATES: Final = """
AL Alabama
AK Alaska
AS American Samoa
AZ Arizona
AR Arkansas
CA California
CO Colorado
CT Connecticut
DE Delaware
DC District of Columbia; Washington DC; Washington D.C.
FL Florida
GA Georgia
GU Guam
HI Hawaii
ID Idaho
IL Illinois
IN Indiana
IA Iowa
KS Kansas
KY Kentucky
LA Louisiana
ME Maine
MD Maryland
MA Massachusetts
MI Michigan
MN Minnesota
MS Mississippi
MO Missouri
MT Montana
NE Nebraska
NV Nevada
NH New Hampshire
NJ New Jersey
NM New Mexico
NY New York
NC North Carolina
ND North Dakota
MP Northern Mariana Islands
OH Ohio
OK Oklahoma
OR Oregon
PA Pennsylvania
PR Puerto Rico
RI Rhode Island
SC South Carolina
SD South Dakota
TN Tennessee
TX Texas
UT Utah
VI US Virgin Islands; U.S. Virgin Islands
VT Vermont
VA Virginia
WA Washington
WV West Virginia
WI Wisconsin
WY Wyoming
"""

_THE: Final = re.compile(r"^the\s+")


def name_key(text: str) -> str:
    """The form names are compared in: casefolded, no accents, no leading "the", [a-z0-9] only."""
    folded = _THE.sub("", text.strip().casefold(), count=1)
    if not folded.isascii():
        folded = unicodedata.normalize("NFKD", folded)
    return "".join(ch for ch in folded if ch.isalnum() and ch.isascii())


def _table(text: str, *, codes: int) -> list[tuple[str, list[str]]]:
    """Rows of ``codes`` leading codes followed by ";"-separated names."""
    rows = []
    for line in text.strip().splitlines():
        parts = line.split(" ", codes)
        rows.append((parts[0], [*parts[1:codes], *(n.strip() for n in parts[codes].split(";"))]))
    return rows


def _index(pairs: list[tuple[str, str]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for name, code in pairs:
        key = name_key(name)
        if index.setdefault(key, code) != code:
            raise ValueError(f"name {name!r} is listed for {index[key]} and {code}")
    return index


_COUNTRY_ROWS: Final = _table(ISO_3166, codes=2)

ALPHA2: Final[frozenset[str]] = frozenset(code for code, _ in _COUNTRY_ROWS)
ALPHA3_TO_ALPHA2: Final[dict[str, str]] = {names[0]: code for code, names in _COUNTRY_ROWS}
COUNTRY_NAMES: Final[dict[str, str]] = _index(
    [(name, code) for code, names in _COUNTRY_ROWS for name in names[1:]]
    + [(name, code) for code, names in _table(ALIASES, codes=1) for name in names]
)
US_STATE_CODES: Final[frozenset[str]] = frozenset(code for code, _ in _table(US_STATES, codes=1))
US_STATE_NAMES: Final[dict[str, str]] = _index(
    [(name, code) for code, names in _table(US_STATES, codes=1) for name in names]
)


def country_code(text: str) -> str | None:
    """ISO alpha-2 (upper case) for an alpha-2 or alpha-3 code or a known name, else None."""
    compact = visible(text.strip())
    upper = compact.upper()
    if len(upper) == 2 and upper in ALPHA2:
        return upper
    if len(upper) == 3 and upper in ALPHA3_TO_ALPHA2:
        return ALPHA3_TO_ALPHA2[upper]
    return COUNTRY_NAMES.get(name_key(compact))


def us_state_code(text: str) -> str | None:
    """USPS code (upper case) for a US state, DC or territory name or code, else None."""
    key = name_key(text)
    upper = key.upper()
    if upper in US_STATE_CODES:
        return upper
    return US_STATE_NAMES.get(key)
