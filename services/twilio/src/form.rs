//! `application/x-www-form-urlencoded` bodies as Twilio sends and accepts them: ordered
//! `(name, value)` pairs, names may repeat (`StatusCallbackEvent=initiated&…=answered`).
//!
//! Consumes raw bodies or pairs; produces pairs or encoded text. Stateless.

/// Why a form body or one of its fields was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body is not form encoding.
    #[error("malformed form body: {0}")]
    Malformed(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field's value is not one Twilio sends.
    #[error("invalid {field}: {value:?}")]
    Invalid { field: &'static str, value: String },
    /// A field Twilio sends once came more than once (which value would count is not
    /// Twilio's to say, so the request is refused).
    #[error("field {0} given more than once")]
    Repeated(&'static str),
}

impl FormError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Missing(_) => "missing",
            Self::Invalid { .. } => "invalid",
            Self::Repeated(_) => "repeated",
        }
    }
}

/// Decodes a form body into its pairs, in order, repeated names kept.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    serde_urlencoded::from_bytes(body).map_err(|e| FormError::Malformed(e.to_string()))
}

/// Encodes pairs as a form body, in order, repeated names kept.
pub fn encode_form<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    serde_urlencoded::to_string(pairs).expect("string pairs always encode")
}

/// The first value of `name`.
pub fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of `name`, in order.
pub fn all<'a>(params: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The one value of a single-valued field, if present; a repeated one is refused.
fn single<'a>(
    params: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, FormError> {
    let mut values = params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let value = values.next();
    match values.next() {
        Some(_) => Err(FormError::Repeated(name)),
        None => Ok(value),
    }
}

/// The value of `name`, which must be present, once.
pub(crate) fn required(
    params: &[(String, String)],
    name: &'static str,
) -> Result<String, FormError> {
    single(params, name)?
        .map(str::to_owned)
        .ok_or(FormError::Missing(name))
}

/// The value of `name` if present (once).
pub(crate) fn optional(
    params: &[(String, String)],
    name: &'static str,
) -> Result<Option<String>, FormError> {
    Ok(single(params, name)?.map(str::to_owned))
}

/// The value of `name` as a number, if present (once).
pub(crate) fn number<T: std::str::FromStr>(
    params: &[(String, String)],
    name: &'static str,
) -> Result<Option<T>, FormError> {
    single(params, name)?
        .map(|v| {
            v.parse().map_err(|_| FormError::Invalid {
                field: name,
                value: v.to_owned(),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeated keys survive both directions, in order; `+` and spaces are encoded.
    #[test]
    fn repeated_keys_roundtrip() {
        let pairs = [
            ("To", "+14155551234"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "answered"),
            ("Twiml", "<Response><Say>a b</Say></Response>"),
        ];
        let body = encode_form(&pairs);
        assert!(
            body.starts_with(
                "To=%2B14155551234&StatusCallbackEvent=initiated&StatusCallbackEvent=answered&"
            ),
            "{body}"
        );
        let back = parse_form(body.as_bytes()).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(all(&back, "StatusCallbackEvent"), ["initiated", "answered"]);
        assert_eq!(
            first(&back, "Twiml"),
            Some("<Response><Say>a b</Say></Response>")
        );
        assert_eq!(
            parse_form(b"From=+1415").unwrap()[0].1,
            " 1415",
            "a raw + is a space"
        );
    }

    /// Fields are typed with clear errors.
    #[test]
    fn field_helpers() {
        let params = parse_form(b"A=1&B=x").unwrap();
        assert_eq!(number::<u32>(&params, "A"), Ok(Some(1)));
        assert_eq!(number::<u32>(&params, "C"), Ok(None));
        assert_eq!(number::<u32>(&params, "B").unwrap_err().kind(), "invalid");
        assert_eq!(required(&params, "C").unwrap_err(), FormError::Missing("C"));
        assert!(
            parse_form(&[0xff, b'=', 0xfe, b'&', b'&']).is_ok(),
            "invalid UTF-8 decodes lossily"
        );
    }
}
