//! What a thread message carries, inside its MLS encryption.
//!
//! The hub sees only ciphertext, so the shape of a message's content is an
//! agreement between SDKs: the MLS plaintext is one CBOR-encoded [`Content`],
//! tagged by `kind`. New kinds are added as new variants; a receiver that
//! meets a kind it does not know reports the message as unreadable rather than
//! guessing.

use serde::{Deserialize, Serialize};

use crate::attachment::Attachment;

/// The decrypted content of a thread message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// Application-defined bytes, for case systems with their own format.
    Bytes {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A caseworker's text.
    Text {
        /// The text.
        text: String,
    },
    /// An encrypted file at the hub; fetch it with [`crate::Client::fetch_attachment`].
    Attachment(Attachment),
    /// A handover packet: what the receiving organisation needs to take the case over.
    HandoverPacket(Box<crate::packet::HandoverPacket>),
    /// Earlier messages re-shared on purpose to members who joined later (MLS gives them no history).
    HistoryShare(HistoryShare),
    /// The minutes of a case conference (its number in the case's state), end to end encrypted.
    Minutes {
        /// The conference's number.
        conference: u32,
        /// The minutes.
        text: String,
    },
    /// What each family member was told when the receiver completed a handover (its offer number),
    /// or why not: the records the completion refers to (see [`crate::Client::complete_informed`]).
    Informed {
        /// The offer completed.
        offer: u32,
        /// One record per family member and decision.
        records: Vec<crate::packet::Informed>,
    },
}

/// Earlier messages of a thread, re-shared with their original ids, seqs,
/// senders and times; see [`crate::Client::share_history`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryShare {
    /// The items, in their original order.
    pub items: Vec<SharedItem>,
}

/// One earlier message in a history share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedItem {
    /// Its original id.
    pub id: wire::MessageId,
    /// Its original seq in the thread.
    pub seq: u64,
    /// Who sent it.
    pub sender: wire::MemberId,
    /// When the hub stored it.
    pub at_ms: u64,
    /// Its content: text, bytes, an attachment (whose key travels with it) or a packet; never another share.
    pub content: Content,
}

impl SharedItem {
    /// An earlier message as received, to re-share.
    pub fn of(message: &crate::Message) -> Self {
        Self {
            id: message.id,
            seq: message.seq,
            sender: message.sender.clone(),
            at_ms: message.at_ms,
            content: message.content.clone(),
        }
    }
}

impl Content {
    /// The MLS plaintext for this content.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Reads content from an MLS plaintext.
    pub fn decode(plaintext: &[u8]) -> Result<Self, String> {
        let content: Self = wire::decode(plaintext).map_err(|e| format!("not Ketenhub message content: {e}"))?;
        match &content {
            Self::HandoverPacket(packet) if !crate::packet::READS_VERSIONS.contains(&packet.version) => {
                return Err(format!("a handover packet of version {}, which this SDK does not read", packet.version));
            }
            Self::Informed { records, .. } if records.is_empty() => {
                return Err("information records without a record".into());
            }
            _ => {}
        }
        if let Self::HistoryShare(share) = &content {
            // A share of shares would let a sharer pass off items as re-shared by someone else.
            if share.items.iter().any(|i| matches!(i.content, Self::HistoryShare(_))) {
                return Err("a history share holds another history share".into());
            }
        }
        Ok(content)
    }

    /// The bytes of a `Bytes` message, or the UTF-8 of a `Text` message;
    /// empty for other kinds.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Bytes { data } => data,
            Self::Text { text } | Self::Minutes { text, .. } => text.as_bytes(),
            Self::Attachment(_) | Self::HandoverPacket(_) | Self::HistoryShare(_) | Self::Informed { .. } => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_of_an_unknown_version_and_empty_information_are_refused() {
        let today = crate::packet::Date::new(2026, 3, 16).unwrap();
        let mut packet = crate::packet::HandoverPacket::example(today);
        assert!(Content::decode(&Content::HandoverPacket(Box::new(packet.clone())).encode()).is_ok());
        packet.version = 3;
        let error = Content::decode(&Content::HandoverPacket(Box::new(packet)).encode()).unwrap_err();
        assert!(error.contains("version 3"), "{error}");
        assert!(Content::decode(&Content::Informed { offer: 1, records: Vec::new() }.encode()).is_err());
    }

    #[test]
    fn content_round_trips_and_foreign_bytes_are_refused() {
        for content in [Content::Bytes { data: vec![0, 255] }, Content::Text { text: "hallo".into() }] {
            assert_eq!(Content::decode(&content.encode()).unwrap(), content);
        }
        assert!(Content::decode(b"plain bytes").is_err());
    }

    #[test]
    fn a_history_share_round_trips_and_one_inside_another_is_refused() {
        let item = |content| SharedItem {
            id: wire::MessageId::new(),
            seq: 3,
            sender: wire::MemberId { oin: "00000001800000000001".parse().unwrap(), worker: "anna".into() },
            at_ms: 1,
            content,
        };
        let share = Content::HistoryShare(HistoryShare { items: vec![item(Content::Text { text: "eerder".into() })] });
        assert_eq!(Content::decode(&share.encode()).unwrap(), share);
        let nested = Content::HistoryShare(HistoryShare { items: vec![item(share)] });
        assert!(Content::decode(&nested.encode()).is_err());
    }
}
