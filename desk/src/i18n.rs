//! The desk's words, Dutch first and English selectable.
//!
//! Every user-facing string lives in one file per language (`desk/i18n/nl.toml`,
//! `desk/i18n/en.toml`), embedded in the binary; templates look them up by key.
//! A test checks that both files have the same keys, so no page shows a key
//! instead of a word in either language.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A language the desk speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Dutch, the default.
    #[default]
    Nl,
    /// English.
    En,
}

impl Lang {
    /// The language for a code, `nl` or `en`.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "nl" => Some(Self::Nl),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// Its code, as in `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Nl => "nl",
            Self::En => "en",
        }
    }
}

/// A language's strings, by key.
pub type Strings = BTreeMap<String, String>;

const NL: &str = include_str!("../i18n/nl.toml");
const EN: &str = include_str!("../i18n/en.toml");

fn parse(text: &str) -> Strings {
    // The files are part of the binary and checked by a test, so they always parse.
    toml::from_str(text).unwrap_or_default()
}

/// The strings of a language.
pub fn strings(lang: Lang) -> &'static Strings {
    static NL_STRINGS: OnceLock<Strings> = OnceLock::new();
    static EN_STRINGS: OnceLock<Strings> = OnceLock::new();
    match lang {
        Lang::Nl => NL_STRINGS.get_or_init(|| parse(NL)),
        Lang::En => EN_STRINGS.get_or_init(|| parse(EN)),
    }
}

/// One string, or its key when it is missing (which the test rules out).
pub fn word(lang: Lang, key: &str) -> String {
    strings(lang).get(key).cloned().unwrap_or_else(|| key.to_owned())
}

/// A packet problem in a language: the template `problem_CODE` with each `{name}` filled from the
/// problem's values; the SDK's English sentence when a template is missing (which the test rules out).
pub fn problem(lang: Lang, problem: &ketenhub_sdk::packet::Problem) -> String {
    let Some(template) = strings(lang).get(&format!("problem_{}", problem.code())) else { return problem.to_string() };
    let values = serde_json::to_value(problem).unwrap_or_default();
    let mut text = template.clone();
    for (name, value) in values.as_object().into_iter().flatten() {
        let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        text = text.replace(&format!("{{{name}}}"), &value);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_packet_problem_is_worded_in_both_languages_with_every_value_filled_in() {
        for lang in [Lang::Nl, Lang::En] {
            for kind in ketenhub_sdk::packet::Problem::every_kind() {
                let key = format!("problem_{}", kind.code());
                assert!(strings(lang).contains_key(&key), "{lang:?} has no {key}");
                let text = problem(lang, &kind);
                assert!(!text.contains('{') && !text.contains('}'), "{lang:?} {key} leaves a placeholder: {text}");
            }
        }
        let born = ketenhub_sdk::packet::Problem::BornLater { year: 2030, this_year: 2026 };
        assert_eq!(problem(Lang::Nl, &born), "2030 ligt na dit jaar (2026)");
    }

    #[test]
    fn both_languages_parse_and_have_the_same_keys() {
        let nl: Strings = toml::from_str(NL).expect("nl.toml parses");
        let en: Strings = toml::from_str(EN).expect("en.toml parses");
        let missing_en: Vec<_> = nl.keys().filter(|k| !en.contains_key(*k)).collect();
        let missing_nl: Vec<_> = en.keys().filter(|k| !nl.contains_key(*k)).collect();
        assert!(missing_en.is_empty() && missing_nl.is_empty(), "en lacks {missing_en:?}, nl lacks {missing_nl:?}");
        assert!(nl.len() > 50);
    }
}
