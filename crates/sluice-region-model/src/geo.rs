//! Coordinates and great-circle distance.

use std::fmt;

/// Mean Earth radius in kilometres (IUGG), used by [`GeoPoint::distance_km`].
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on Earth in decimal degrees.
///
/// Construction does not validate; [`Snapshot::new`](crate::Snapshot::new) does, and
/// [`GeoPoint::is_valid`] is there for callers that accept coordinates from users.
#[derive(Clone, Copy, PartialEq)]
pub struct GeoPoint {
    lat: f64,
    lon: f64,
}

// ===== impl GeoPoint =====

impl GeoPoint {
    /// Creates a point from latitude and longitude in degrees.
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// Latitude in degrees, north positive.
    pub const fn lat(&self) -> f64 {
        self.lat
    }

    /// Longitude in degrees, east positive.
    pub const fn lon(&self) -> f64 {
        self.lon
    }

    /// Whether both coordinates are finite and within ±90 / ±180 degrees.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    /// The point as a unit vector from the Earth's centre (x towards 0°N 0°E, z towards the
    /// north pole).
    ///
    /// The dot product of two such vectors is the cosine of the angle between the points, so
    /// comparing dot products ranks points by great-circle distance without any trigonometry.
    pub fn unit_vector(&self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }

    /// Great-circle distance to `other` in kilometres, by the haversine formula.
    ///
    /// Returns NaN if either point has a NaN coordinate.
    pub fn distance_km(&self, other: GeoPoint) -> f64 {
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        // Clamp against rounding just above 1.0 for antipodal points.
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

impl fmt::Debug for GeoPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.lat, self.lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEOUL: GeoPoint = GeoPoint::new(37.5665, 126.9780);
    const TOKYO: GeoPoint = GeoPoint::new(35.6762, 139.6503);
    const FRANKFURT: GeoPoint = GeoPoint::new(50.1109, 8.6821);
    const VIRGINIA: GeoPoint = GeoPoint::new(38.9072, -77.0369);

    fn check(a: GeoPoint, b: GeoPoint, expect_km: f64) {
        let d = a.distance_km(b);
        assert!((d - expect_km).abs() < expect_km * 0.005 + 0.5, "{a:?} -> {b:?}: {d} km, expected {expect_km}");
        // Symmetric.
        assert!((d - b.distance_km(a)).abs() < 1e-9);
    }

    #[test]
    fn known_distances() {
        check(SEOUL, TOKYO, 1152.0);
        check(SEOUL, FRANKFURT, 8560.0);
        check(FRANKFURT, VIRGINIA, 6520.0);
        check(SEOUL, SEOUL, 0.0);
        // Antipodes: half the circumference.
        check(GeoPoint::new(0.0, 0.0), GeoPoint::new(0.0, 180.0), std::f64::consts::PI * EARTH_RADIUS_KM);
        // Across the antimeridian is short.
        check(GeoPoint::new(0.0, 179.5), GeoPoint::new(0.0, -179.5), 111.2);
    }

    #[test]
    fn unit_vectors_rank_like_distances() {
        let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        let s = SEOUL.unit_vector();
        assert!((dot(s, s) - 1.0).abs() < 1e-12);
        let angle = dot(s, TOKYO.unit_vector()).clamp(-1.0, 1.0).acos();
        assert!((angle * EARTH_RADIUS_KM - SEOUL.distance_km(TOKYO)).abs() < 1e-6);
        assert!(dot(s, TOKYO.unit_vector()) > dot(s, FRANKFURT.unit_vector()));
    }

    #[test]
    fn validity() {
        assert!(SEOUL.is_valid());
        assert!(GeoPoint::new(90.0, -180.0).is_valid());
        assert!(!GeoPoint::new(90.1, 0.0).is_valid());
        assert!(!GeoPoint::new(0.0, 180.1).is_valid());
        assert!(!GeoPoint::new(f64::NAN, 0.0).is_valid());
        assert!(!GeoPoint::new(0.0, f64::INFINITY).is_valid());
    }
}
