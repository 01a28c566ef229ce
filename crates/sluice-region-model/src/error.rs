//! Errors from building a [`Snapshot`](crate::Snapshot).

/// Why a list of regions could not become a [`Snapshot`](crate::Snapshot).
///
/// Every variant that concerns one region names it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The list of regions was empty.
    #[error("no regions given")]
    Empty,
    /// A region has an empty id.
    #[error("region #{index} has an empty id")]
    EmptyId {
        /// Position of the region in the input, from 0.
        index: usize,
    },
    /// Two regions share an id.
    #[error("duplicate region id `{region}`")]
    DuplicateId {
        /// The repeated id.
        region: String,
    },
    /// A coordinate is NaN or infinite.
    #[error("region `{region}`: {field} is not a finite number")]
    NotFinite {
        /// The region's id.
        region: String,
        /// `"latitude"` or `"longitude"`.
        field: &'static str,
    },
    /// Latitude outside ±90 degrees.
    #[error("region `{region}`: latitude {lat} is outside -90..=90")]
    LatitudeOutOfRange {
        /// The region's id.
        region: String,
        /// The offending value.
        lat: f64,
    },
    /// Longitude outside ±180 degrees.
    #[error("region `{region}`: longitude {lon} is outside -180..=180")]
    LongitudeOutOfRange {
        /// The region's id.
        region: String,
        /// The offending value.
        lon: f64,
    },
    /// The endpoint is not a parseable absolute URL.
    #[error("region `{region}`: invalid endpoint url `{url}`")]
    InvalidUrl {
        /// The region's id.
        region: String,
        /// The endpoint as given.
        url: String,
        /// What the parser said.
        #[source]
        source: url::ParseError,
    },
    /// The endpoint parses but is not http or https.
    #[error("region `{region}`: endpoint scheme `{scheme}` is not http or https")]
    UnsupportedScheme {
        /// The region's id.
        region: String,
        /// The scheme found.
        scheme: String,
    },
    /// The endpoint carries a user name or password; keys belong in the api key.
    #[error("region `{region}`: endpoint url must not contain credentials")]
    CredentialsInUrl {
        /// The region's id.
        region: String,
    },
    /// Every region has weight zero, so none could ever be picked.
    #[error("all {count} regions have weight 0")]
    AllWeightsZero {
        /// How many regions there were.
        count: usize,
    },
    /// More regions than a [`NodeId`](crate::NodeId) can address.
    #[error("too many regions: {count}")]
    TooMany {
        /// How many regions there were.
        count: usize,
    },
}
