//! The CBOR bodies this backend sends and reads: read-test-write requests
//! and answers, and share-number sets. Decoding checks every type and
//! rejects what the protocol does not allow.

use std::collections::BTreeMap;

use bytes::Bytes;
use ciborium::Value;

/// Why a CBOR answer was refused: what the protocol does not allow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CborError {
    #[error("invalid CBOR: {0}")]
    Invalid(#[source] ciborium::de::Error<std::io::Error>),
    #[error("{count} bytes after the CBOR value")]
    TrailingBytes { count: usize },
    #[error("read-test-write answer is not a map")]
    AnswerNotMap,
    #[error("`success` is not a boolean")]
    SuccessNotBool,
    #[error("no `success` in the read-test-write answer")]
    NoSuccess,
    #[error("`data` is not a map")]
    DataNotMap,
    #[error("read data is not an array")]
    ReadsNotArray,
    #[error("read data is not a byte string")]
    ReadNotBytes,
    #[error("share number {value} out of range")]
    ShareOutOfRange { value: i128 },
    #[error("share number is not an integer")]
    ShareNotInteger,
    #[error("share set is not an array")]
    SetNotArray,
    #[error("allocation answer is not a map")]
    AllocationNotMap,
    #[error("no `{0}` in the allocation answer")]
    AllocationMissing(&'static str),
}

/// CBOR tag of a set (the protocol's share-number sets).
const TAG_SET: u64 = 258;

/// What to do to one share in a read-test-write.
#[derive(Debug, Default)]
pub(crate) struct ShareOps {
    /// `(offset, specimen)`: the bytes at `offset` must equal `specimen`
    /// (read as much as exists; a missing share reads as empty).
    pub tests: Vec<(u64, Vec<u8>, u64)>,
    /// `(offset, data)` written in this order.
    pub writes: Vec<(u64, Bytes)>,
    /// `Some(0)` deletes the share; `None` keeps its length.
    pub new_length: Option<u64>,
}

impl ShareOps {
    /// Adds a test that the `specimen.len()` bytes at `offset` are `specimen`.
    pub(crate) fn test_eq(mut self, offset: u64, specimen: &[u8]) -> Self {
        self.tests
            .push((offset, specimen.to_vec(), specimen.len() as u64));
        self
    }

    /// Adds the test that passes only on a missing (or empty) share: one
    /// byte read at offset 0 must be nothing.
    pub(crate) fn test_absent(mut self) -> Self {
        self.tests.push((0, Vec::new(), 1));
        self
    }

    pub(crate) fn write(mut self, offset: u64, data: Bytes) -> Self {
        self.writes.push((offset, data));
        self
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Encodes a read-test-write request: operations per share number and one
/// read vector applied to every share of the slot.
pub(crate) fn encode_rtw(ops: &BTreeMap<u8, ShareOps>, reads: &[(u64, u64)]) -> Bytes {
    let vectors = ops
        .iter()
        .map(|(share, op)| {
            let tests = op
                .tests
                .iter()
                .map(|(offset, specimen, size)| {
                    Value::Map(vec![
                        (text("offset"), Value::from(*offset)),
                        (text("size"), Value::from(*size)),
                        (text("specimen"), Value::Bytes(specimen.clone())),
                    ])
                })
                .collect();
            let writes = op
                .writes
                .iter()
                .map(|(offset, data)| {
                    Value::Map(vec![
                        (text("offset"), Value::from(*offset)),
                        (text("data"), Value::Bytes(data.to_vec())),
                    ])
                })
                .collect();
            let new_length = match op.new_length {
                Some(len) => Value::from(len),
                None => Value::Null,
            };
            (
                Value::from(*share),
                Value::Map(vec![
                    (text("test"), Value::Array(tests)),
                    (text("write"), Value::Array(writes)),
                    (text("new-length"), new_length),
                ]),
            )
        })
        .collect();
    let reads = reads
        .iter()
        .map(|(offset, size)| {
            Value::Map(vec![
                (text("offset"), Value::from(*offset)),
                (text("size"), Value::from(*size)),
            ])
        })
        .collect();
    let body = Value::Map(vec![
        (text("test-write-vectors"), Value::Map(vectors)),
        (text("read-vector"), Value::Array(reads)),
    ]);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every value is encodable.
    if let Err(e) = ciborium::into_writer(&body, &mut out) {
        unreachable!("CBOR encoding into memory failed: {e}");
    }
    Bytes::from(out)
}

/// A read-test-write answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RtwAnswer {
    pub success: bool,
    /// For every share of the slot before the writes, the data of each read.
    pub data: BTreeMap<u8, Vec<Vec<u8>>>,
}

fn decode(body: &[u8]) -> Result<Value, CborError> {
    let mut reader = body;
    // ciborium bounds nesting (256 levels) and reads byte strings in chunks,
    // so a hostile length header cannot make it allocate more than the body.
    let value: Value = ciborium::from_reader(&mut reader).map_err(CborError::Invalid)?;
    if !reader.is_empty() {
        return Err(CborError::TrailingBytes {
            count: reader.len(),
        });
    }
    Ok(value)
}

/// Map keys are text in some answers and byte strings in others.
fn key_is(key: &Value, name: &str) -> bool {
    match key {
        Value::Text(t) => t == name,
        Value::Bytes(b) => b == name.as_bytes(),
        _ => false,
    }
}

fn share_number(value: &Value) -> Result<u8, CborError> {
    match value {
        Value::Integer(i) => {
            let value = i128::from(*i);
            u8::try_from(value).map_err(|_| CborError::ShareOutOfRange { value })
        }
        _ => Err(CborError::ShareNotInteger),
    }
}

pub(crate) fn decode_rtw_answer(body: &[u8]) -> Result<RtwAnswer, CborError> {
    let Value::Map(entries) = decode(body)? else {
        return Err(CborError::AnswerNotMap);
    };
    let mut success = None;
    let mut data = BTreeMap::new();
    for (key, value) in entries {
        if key_is(&key, "success") {
            match value {
                Value::Bool(b) => success = Some(b),
                _ => return Err(CborError::SuccessNotBool),
            }
        } else if key_is(&key, "data") {
            let Value::Map(shares) = value else {
                return Err(CborError::DataNotMap);
            };
            for (share, reads) in shares {
                let share = share_number(&share)?;
                let Value::Array(reads) = reads else {
                    return Err(CborError::ReadsNotArray);
                };
                let reads = reads
                    .into_iter()
                    .map(|r| match r {
                        Value::Bytes(b) => Ok(b),
                        _ => Err(CborError::ReadNotBytes),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                data.insert(share, reads);
            }
        }
    }
    Ok(RtwAnswer {
        success: success.ok_or(CborError::NoSuccess)?,
        data,
    })
}

/// A set of share numbers: tag 258 over an array (a bare array is accepted).
pub(crate) fn decode_share_set(body: &[u8]) -> Result<Vec<u8>, CborError> {
    let value = match decode(body)? {
        Value::Tag(TAG_SET, inner) => *inner,
        other => other,
    };
    let Value::Array(items) = value else {
        return Err(CborError::SetNotArray);
    };
    items.iter().map(share_number).collect()
}

/// Encodes an immutable allocation: `{share-numbers: set, allocated-size}`.
pub(crate) fn encode_allocate(shares: &[u8], allocated_size: u64) -> Bytes {
    let numbers = shares.iter().map(|n| Value::from(*n)).collect();
    let body = Value::Map(vec![
        (
            text("share-numbers"),
            Value::Tag(TAG_SET, Box::new(Value::Array(numbers))),
        ),
        (text("allocated-size"), Value::from(allocated_size)),
    ]);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every value is encodable.
    if let Err(e) = ciborium::into_writer(&body, &mut out) {
        unreachable!("CBOR encoding into memory failed: {e}");
    }
    Bytes::from(out)
}

/// An allocation answer: the shares the server already holds, and those
/// it allocated for this upload.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub already_have: Vec<u8>,
    pub allocated: Vec<u8>,
}

pub(crate) fn decode_allocation(body: &[u8]) -> Result<Allocation, CborError> {
    let Value::Map(entries) = decode(body)? else {
        return Err(CborError::AllocationNotMap);
    };
    let set = |value: &Value| -> Result<Vec<u8>, CborError> {
        let value = match value {
            Value::Tag(TAG_SET, inner) => inner.as_ref(),
            other => other,
        };
        let Value::Array(items) = value else {
            return Err(CborError::SetNotArray);
        };
        items.iter().map(share_number).collect()
    };
    let mut already_have = None;
    let mut allocated = None;
    for (key, value) in &entries {
        if key_is(key, "already-have") {
            already_have = Some(set(value)?);
        } else if key_is(key, "allocated") {
            allocated = Some(set(value)?);
        }
    }
    Ok(Allocation {
        already_have: already_have.ok_or(CborError::AllocationMissing("already-have"))?,
        allocated: allocated.ok_or(CborError::AllocationMissing("allocated"))?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn allocation_request_and_answer() {
        let request = encode_allocate(&[3], 1234);
        let value: Value = ciborium::from_reader(&request[..]).unwrap();
        let Value::Map(entries) = value else {
            panic!("{value:?}")
        };
        assert!(key_is(&entries[0].0, "share-numbers"));
        assert_eq!(
            entries[0].1,
            Value::Tag(TAG_SET, Box::new(Value::Array(vec![Value::from(3u8)])))
        );
        assert_eq!(entries[1].1, Value::from(1234u64));
        let answer = encode(&Value::Map(vec![
            (
                text("already-have"),
                Value::Tag(TAG_SET, Box::new(Value::Array(vec![]))),
            ),
            (
                text("allocated"),
                Value::Tag(TAG_SET, Box::new(Value::Array(vec![Value::from(3u8)]))),
            ),
        ]));
        assert_eq!(
            decode_allocation(&answer).unwrap(),
            Allocation {
                already_have: vec![],
                allocated: vec![3]
            }
        );
        let missing = encode(&Value::Map(vec![(text("allocated"), Value::Array(vec![]))]));
        assert!(matches!(
            decode_allocation(&missing),
            Err(CborError::AllocationMissing("already-have"))
        ));
        let huge = encode(&Value::Map(vec![
            (text("already-have"), Value::Array(vec![])),
            (text("allocated"), Value::Array(vec![Value::from(999u32)])),
        ]));
        assert!(decode_allocation(&huge).is_err());
        assert!(decode_allocation(b"\xff").is_err());
    }

    #[test]
    fn rtw_request_shape() {
        let mut ops = BTreeMap::new();
        ops.insert(
            3,
            ShareOps::default()
                .test_absent()
                .test_eq(5, b"ab")
                .write(0, Bytes::from_static(b"xyz")),
        );
        let body = encode_rtw(&ops, &[(0, 24)]);
        let value = decode(&body).unwrap();
        let expected = Value::Map(vec![
            (
                text("test-write-vectors"),
                Value::Map(vec![(
                    Value::from(3u8),
                    Value::Map(vec![
                        (
                            text("test"),
                            Value::Array(vec![
                                Value::Map(vec![
                                    (text("offset"), Value::from(0u64)),
                                    (text("size"), Value::from(1u64)),
                                    (text("specimen"), Value::Bytes(vec![])),
                                ]),
                                Value::Map(vec![
                                    (text("offset"), Value::from(5u64)),
                                    (text("size"), Value::from(2u64)),
                                    (text("specimen"), Value::Bytes(b"ab".to_vec())),
                                ]),
                            ]),
                        ),
                        (
                            text("write"),
                            Value::Array(vec![Value::Map(vec![
                                (text("offset"), Value::from(0u64)),
                                (text("data"), Value::Bytes(b"xyz".to_vec())),
                            ])]),
                        ),
                        (text("new-length"), Value::Null),
                    ]),
                )]),
            ),
            (
                text("read-vector"),
                Value::Array(vec![Value::Map(vec![
                    (text("offset"), Value::from(0u64)),
                    (text("size"), Value::from(24u64)),
                ])]),
            ),
        ]);
        assert_eq!(value, expected);
    }

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn answers_decode_and_bad_ones_are_rejected() {
        let answer = Value::Map(vec![
            (text("success"), Value::Bool(false)),
            (
                text("data"),
                Value::Map(vec![(
                    Value::from(2u8),
                    Value::Array(vec![Value::Bytes(b"hi".to_vec())]),
                )]),
            ),
        ]);
        let decoded = decode_rtw_answer(&encode(&answer)).unwrap();
        assert!(!decoded.success);
        assert_eq!(decoded.data[&2], vec![b"hi".to_vec()]);

        let set = Value::Tag(
            258,
            Box::new(Value::Array(vec![Value::from(1u8), Value::from(5u8)])),
        );
        assert_eq!(decode_share_set(&encode(&set)).unwrap(), vec![1, 5]);

        let mut trailing = encode(&set);
        trailing.push(0);
        assert!(matches!(
            decode_share_set(&trailing),
            Err(CborError::TrailingBytes { count: 1 })
        ));
        let big = Value::Array(vec![Value::from(256u64)]);
        assert!(matches!(
            decode_share_set(&encode(&big)),
            Err(CborError::ShareOutOfRange { value: 256 })
        ));
        assert!(matches!(
            decode_rtw_answer(&encode(&Value::Map(vec![]))),
            Err(CborError::NoSuccess)
        ));
        assert!(matches!(
            decode_rtw_answer(b"\xff"),
            Err(CborError::Invalid(_))
        ));
    }

    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
            "[a-z]{0,8}".prop_map(Value::Text),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..6)
                    .prop_map(Value::Map),
                inner.prop_map(|v| Value::Tag(258, Box::new(v))),
            ]
        })
    }

    // Run long by tests/fuzz.sh (PROPTEST_CASES): whatever a storage server
    // answers, decoding returns, never panics.
    proptest! {
        #[test]
        fn fuzz_cbor_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_rtw_answer(&bytes);
            let _ = decode_share_set(&bytes);
        }

        #[test]
        fn fuzz_cbor_arbitrary_values(value in any_value(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&value);
            let _ = decode_rtw_answer(&bytes);
            let _ = decode_share_set(&bytes);
            let cut = cut.index(bytes.len() + 1);
            prop_assert!(decode_share_set(&bytes[..cut]).is_err() || cut == bytes.len());
        }

        #[test]
        fn fuzz_cbor_answers_round_trip(
            success in any::<bool>(),
            data in proptest::collection::btree_map(any::<u8>(), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4), 0..6),
        ) {
            let answer = Value::Map(vec![
                (text("success"), Value::Bool(success)),
                (text("data"), Value::Map(data.iter().map(|(share, reads)| {
                    (Value::from(*share), Value::Array(reads.iter().cloned().map(Value::Bytes).collect()))
                }).collect())),
            ]);
            let decoded = decode_rtw_answer(&encode(&answer));
            prop_assert_eq!(decoded.ok(), Some(RtwAnswer { success, data: data.clone() }));
            let shares: Vec<u8> = data.keys().copied().collect();
            let set = Value::Tag(258, Box::new(Value::Array(shares.iter().map(|s| Value::from(*s)).collect())));
            prop_assert_eq!(decode_share_set(&encode(&set)).ok(), Some(shares));
        }
    }
}
