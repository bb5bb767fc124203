"""Distances between locations: great-circle (haversine) kilometres.

A location with coordinates is placed by them. One without is placed at its
region's reference point from the GB/T 2260 table (``shared.catalog.regions``: a
county's or city's seat, a province's capital, where relief transport is routed
through), the most specific level that has one; ``REGION_POINTS`` (approximate
centres of the provinces and the larger cities) serves where the table has none.
A location that cannot be placed at all is ``unknown_km`` (a parameter,
``MatchOptions.unknown_distance_km``, 3000 km by default) from everything,
itself included; that is far enough to rank it behind any real pairing in China
and to keep perishables away from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from services.dispatch.matching.model import Location
from shared.catalog import regions

EARTH_RADIUS_KM = 6371.0088
UNKNOWN_DISTANCE_KM = 3000.0

# (latitude, longitude) in degrees.
PROVINCE_POINTS: dict[str, tuple[float, float]] = {
    "11": (39.904, 116.407),  # Beijing
    "12": (39.084, 117.201),  # Tianjin
    "13": (38.042, 114.514),  # Hebei: Shijiazhuang
    "14": (37.870, 112.549),  # Shanxi: Taiyuan
    "15": (40.842, 111.749),  # Inner Mongolia: Hohhot
    "21": (41.806, 123.431),  # Liaoning: Shenyang
    "22": (43.817, 125.324),  # Jilin: Changchun
    "23": (45.803, 126.535),  # Heilongjiang: Harbin
    "31": (31.230, 121.474),  # Shanghai
    "32": (32.060, 118.797),  # Jiangsu: Nanjing
    "33": (30.274, 120.155),  # Zhejiang: Hangzhou
    "34": (31.821, 117.227),  # Anhui: Hefei
    "35": (26.074, 119.296),  # Fujian: Fuzhou
    "36": (28.683, 115.858),  # Jiangxi: Nanchang
    "37": (36.651, 117.120),  # Shandong: Jinan
    "41": (34.747, 113.625),  # Henan: Zhengzhou
    "42": (30.593, 114.305),  # Hubei: Wuhan
    "43": (28.228, 112.939),  # Hunan: Changsha
    "44": (23.129, 113.264),  # Guangdong: Guangzhou
    "45": (22.817, 108.366),  # Guangxi: Nanning
    "46": (20.044, 110.199),  # Hainan: Haikou
    "50": (29.563, 106.551),  # Chongqing
    "51": (30.573, 104.066),  # Sichuan: Chengdu
    "52": (26.647, 106.630),  # Guizhou: Guiyang
    "53": (25.038, 102.718),  # Yunnan: Kunming
    "54": (29.652, 91.172),  # Tibet: Lhasa
    "61": (34.341, 108.940),  # Shaanxi: Xi'an
    "62": (36.061, 103.834),  # Gansu: Lanzhou
    "63": (36.617, 101.778),  # Qinghai: Xining
    "64": (38.487, 106.231),  # Ningxia: Yinchuan
    "65": (43.825, 87.617),  # Xinjiang: Urumqi
}

CITY_POINTS: dict[str, tuple[float, float]] = {
    # Hubei
    "4201": (30.593, 114.305),  # Wuhan
    "4202": (30.200, 115.039),  # Huangshi
    "4203": (32.629, 110.798),  # Shiyan
    "4205": (30.692, 111.286),  # Yichang
    "4206": (32.009, 112.122),  # Xiangyang
    "4207": (30.391, 114.895),  # Ezhou
    "4208": (31.035, 112.199),  # Jingmen
    "4209": (30.925, 113.917),  # Xiaogan
    "4210": (30.335, 112.240),  # Jingzhou
    "4211": (30.447, 114.872),  # Huanggang
    "4212": (29.841, 114.322),  # Xianning
    "4213": (31.690, 113.383),  # Suizhou
    "4228": (30.272, 109.488),  # Enshi Tujia and Miao Autonomous Prefecture
    # Hubei's neighbours
    "4113": (32.999, 112.528),  # Nanyang
    "4115": (32.147, 114.091),  # Xinyang
    "4306": (29.357, 113.129),  # Yueyang
    "3604": (29.705, 116.001),  # Jiujiang
    "3408": (30.543, 117.063),  # Anqing
    # Major cities
    "1101": (39.904, 116.407),  # Beijing
    "1201": (39.084, 117.201),  # Tianjin
    "1301": (38.042, 114.514),  # Shijiazhuang
    "2101": (41.806, 123.431),  # Shenyang
    "2102": (38.914, 121.615),  # Dalian
    "3101": (31.230, 121.474),  # Shanghai
    "3201": (32.060, 118.797),  # Nanjing
    "3205": (31.299, 120.585),  # Suzhou
    "3301": (30.274, 120.155),  # Hangzhou
    "3302": (29.868, 121.544),  # Ningbo
    "3401": (31.821, 117.227),  # Hefei
    "3501": (26.074, 119.296),  # Fuzhou
    "3502": (24.480, 118.089),  # Xiamen
    "3601": (28.683, 115.858),  # Nanchang
    "3701": (36.651, 117.120),  # Jinan
    "3702": (36.067, 120.383),  # Qingdao
    "4101": (34.747, 113.625),  # Zhengzhou
    "4301": (28.228, 112.939),  # Changsha
    "4401": (23.129, 113.264),  # Guangzhou
    "4403": (22.543, 114.058),  # Shenzhen
    "4406": (23.022, 113.122),  # Foshan
    "4419": (23.021, 113.752),  # Dongguan
    "5001": (29.563, 106.551),  # Chongqing
    "5101": (30.573, 104.066),  # Chengdu
    "5301": (25.038, 102.718),  # Kunming
    "6101": (34.341, 108.940),  # Xi'an
}

# County-level units with 6-digit codes of their own and no city above them.
DISTRICT_POINTS: dict[str, tuple[float, float]] = {
    "429004": (30.364, 113.454),  # Xiantao
    "429005": (30.402, 112.899),  # Qianjiang
    "429006": (30.663, 113.166),  # Tianmen
    "429021": (31.745, 110.676),  # Shennongjia
}

REGION_POINTS: dict[str, tuple[float, float]] = {
    **PROVINCE_POINTS,
    **CITY_POINTS,
    **DISTRICT_POINTS,
}


# Distances between two lists of locations, as a matrix (rows: the first list).
DistanceProvider = Callable[[Sequence[Location], Sequence[Location]], npt.NDArray[np.float64]]


def region_point(region: str | None) -> tuple[float, float] | None:
    """The reference point of a region code: its own in the GB/T 2260 table
    (``shared.catalog.regions``: a county's or city's seat, a province's capital), else
    the nearest level up that has one (6 -> 4 -> 2 digits); ``REGION_POINTS`` where
    the table has none."""
    if not region:
        return None
    found = regions.point(region)
    if found is not None:
        return found
    for length in (6, 4, 2):
        if len(region) >= length:
            point = REGION_POINTS.get(region[:length])
            if point is not None:
                return point
    return None


def coordinates(location: Location) -> tuple[float, float] | None:
    """Where a location is: its own coordinates, else its region's point, else None."""
    if location.lat is not None and location.lon is not None:
        return (float(location.lat), float(location.lon))
    return region_point(location.region)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def distance_km(a: Location, b: Location, unknown_km: float = UNKNOWN_DISTANCE_KM) -> float:
    """Distance in km between two locations; ``unknown_km`` if either can't be placed."""
    pa, pb = coordinates(a), coordinates(b)
    if pa is None or pb is None:
        return unknown_km
    return haversine_km(pa[0], pa[1], pb[0], pb[1])


def distance_matrix(
    rows: Sequence[Location], cols: Sequence[Location], unknown_km: float = UNKNOWN_DISTANCE_KM
) -> npt.NDArray[np.float64]:
    """``distance_km`` between every row and column location, as a float array."""
    rp = [coordinates(loc) for loc in rows]
    cp = [coordinates(loc) for loc in cols]
    r_known = np.array([p is not None for p in rp], dtype=bool)
    c_known = np.array([p is not None for p in cp], dtype=bool)
    r = np.radians(np.array([p if p is not None else (0.0, 0.0) for p in rp], dtype=np.float64))
    c = np.radians(np.array([p if p is not None else (0.0, 0.0) for p in cp], dtype=np.float64))
    r = r.reshape(len(rows), 2)
    c = c.reshape(len(cols), 2)
    lat1, lon1 = r[:, 0:1], r[:, 1:2]
    lat2, lon2 = c[:, 0][None, :], c[:, 1][None, :]
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    dist: npt.NDArray[np.float64] = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    dist[~(r_known[:, None] & c_known[None, :])] = unknown_km
    return dist


def pairwise(
    distance: Callable[[Location, Location], float | None],
    fallback: DistanceProvider | None = None,
) -> DistanceProvider:
    """A provider from a function of two locations (a routing service's road
    distance or travel time, say); where it answers ``None`` the ``fallback``
    (great-circle by default) stands in. Called once per pair of distinct places."""

    def provide(rows: Sequence[Location], cols: Sequence[Location]) -> npt.NDArray[np.float64]:
        out = np.array(
            [[_or_nan(distance(a, b)) for b in cols] for a in rows], dtype=np.float64
        ).reshape(len(rows), len(cols))
        missing = np.isnan(out)
        if missing.any():
            out[missing] = (fallback or distance_matrix)(rows, cols)[missing]
        return out

    return provide


def table(
    km: Mapping[tuple[str, str], float], fallback: DistanceProvider | None = None
) -> DistanceProvider:
    """A provider from a table a coordinator keeps: kilometres (or hours) between
    two places named by region code, looked up from the most specific code down
    (``("420102", "4403")`` answers for any pair of places within those regions, the
    longest prefixes first) and in both directions; pairs it lacks fall back to
    ``fallback`` (great-circle by default)."""

    def lookup(a: Location, b: Location) -> float | None:
        if not a.region or not b.region:
            return None
        for i in range(len(a.region), 0, -1):
            for j in range(len(b.region), 0, -1):
                x, y = a.region[:i], b.region[:j]
                value = km.get((x, y), km.get((y, x)))
                if value is not None:
                    return float(value)
        return None

    return pairwise(lookup, fallback)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
