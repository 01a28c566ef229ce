//! The static description of one region.

use std::fmt;

use crate::GeoPoint;

/// Weight a [`Region`] gets when none is set.
pub const DEFAULT_WEIGHT: u32 = 100;

/// One deployment of an OpenAI-compatible API, as configured.
///
/// A `Region` is plain data; it is validated when it becomes part of a
/// [`Snapshot`](crate::Snapshot).
#[derive(Clone, PartialEq)]
pub struct Region {
    id: String,
    name: String,
    endpoint: String,
    location: GeoPoint,
    weight: u32,
    max_concurrency: Option<u32>,
    api_key: Option<ApiKey>,
    zone: Option<String>,
}

/// A bearer credential.
///
/// It is never printed: `Debug` shows `ApiKey(<redacted>)` and there is no `Display`.
/// Read it with [`ApiKey::expose_secret`] only where it is put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

// ===== impl Region =====

impl Region {
    /// Describes a region by its id (such as `ap-northeast-2`), endpoint base URL
    /// (such as `https://api.example.com/v1`) and location.
    ///
    /// The name defaults to the id and the weight to [`DEFAULT_WEIGHT`].
    pub fn new(id: impl Into<String>, endpoint: impl Into<String>, location: GeoPoint) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
            endpoint: endpoint.into(),
            location,
            weight: DEFAULT_WEIGHT,
            max_concurrency: None,
            api_key: None,
            zone: None,
        }
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the relative weight. Zero means "never picked by weight" (but still a failover target
    /// for strategies that ignore weight only when every weight is zero, which is refused).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets how many calls the region serves at once, as provisioned (a quota or a deployment's
    /// capacity). The snapshot hands it to the node's [`NodeMetrics`](crate::NodeMetrics) as its
    /// configured concurrency limit; `None` (the default) leaves the limit to be learned from
    /// 429 answers. Zero counts as `None`.
    pub fn with_max_concurrency(mut self, limit: Option<u32>) -> Self {
        self.max_concurrency = limit.filter(|&n| n > 0);
        self
    }

    /// Sets the API key used for this region.
    pub fn with_api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the residency zone, such as `eu`: calls restricted to zones go only to regions
    /// whose zone is among them.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The region's id, such as `ap-northeast-2`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The display name, such as `Seoul`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint base URL as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where the region is.
    pub fn location(&self) -> GeoPoint {
        self.location
    }

    /// The configured relative weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The configured concurrency limit, if one was set.
    pub fn max_concurrency(&self) -> Option<u32> {
        self.max_concurrency
    }

    /// The region's own API key, if one was set.
    pub fn api_key(&self) -> Option<&ApiKey> {
        self.api_key.as_ref()
    }

    /// The residency zone, if one was set.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("location", &self.location)
            .field("weight", &self.weight)
            .field("max_concurrency", &self.max_concurrency)
            .field("api_key", &self.api_key)
            .field("zone", &self.zone)
            .finish()
    }
}

// ===== impl ApiKey =====

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().into_boxed_str())
    }

    /// The key itself. Call this only to put it on the wire.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let r = Region::new("eu-central-1", "https://fra.example.com/v1", GeoPoint::new(50.1, 8.7))
            .with_api_key("sk-very-secret-123");
        let dbg = format!("{r:?} {:?} {:#?}", r.api_key(), r);
        assert!(!dbg.contains("sk-very-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        assert_eq!(r.api_key().unwrap().expose_secret(), "sk-very-secret-123");
    }

    #[test]
    fn defaults() {
        let r = Region::new("x", "http://127.0.0.1:1/v1", GeoPoint::new(0.0, 0.0));
        assert_eq!(r.name(), "x");
        assert_eq!(r.weight(), DEFAULT_WEIGHT);
        assert!(r.api_key().is_none());
        assert!(r.zone().is_none());
        assert_eq!(r.with_zone("eu").zone(), Some("eu"));
    }
}
