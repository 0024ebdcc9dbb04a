//! The dashboard's languages: Fluent message catalogues (`dashboard/i18n/<lang>.ftl`, embedded
//! in the binary), the language a request asked for, and formatting a message in it.
//!
//! Fluent rather than a key-value map because translators need plural rules and arguments
//! in their own word order; numbers and dates in pages are formatted by the browser
//! (`Intl`), from the raw values the server puts in the page.

#[cfg(test)]
use std::collections::BTreeSet;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use rust_embed::Embed;
use unic_langid::LanguageIdentifier;

#[derive(Embed)]
#[folder = "dashboard/i18n/"]
struct Catalogues;

/// The languages the dashboard speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    En,
    Es,
    Fr,
    It,
    PtBr,
}

impl Lang {
    pub const ALL: [Lang; 5] = [Lang::En, Lang::Es, Lang::Fr, Lang::It, Lang::PtBr];

    /// The BCP 47 tag (also the catalogue's file name and the page's `lang`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
            Lang::Fr => "fr",
            Lang::It => "it",
            Lang::PtBr => "pt-BR",
        }
    }

    /// The language's own name, for the picker.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Es => "Español",
            Lang::Fr => "Français",
            Lang::It => "Italiano",
            Lang::PtBr => "Português (Brasil)",
        }
    }

    /// A tag as sent in a cookie, a form or `Accept-Language` (`pt-br`, `fr-CA`, `es`…).
    pub fn parse(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        match primary {
            "en" => Some(Lang::En),
            "es" => Some(Lang::Es),
            "fr" => Some(Lang::Fr),
            "it" => Some(Lang::It),
            "pt" => Some(Lang::PtBr),
            _ => None,
        }
    }

    /// The best language for an `Accept-Language` header, by its q-values; English otherwise.
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let mut offers: Vec<(f32, usize, Lang)> = accept_language
            .unwrap_or_default()
            .split(',')
            .enumerate()
            .filter_map(|(position, part)| {
                let mut pieces = part.split(';');
                let lang = Lang::parse(pieces.next()?)?;
                let q = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, position, lang))
            })
            .collect();
        offers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offers.first().map_or(Lang::En, |offer| offer.2)
    }
}

struct Bundles(Vec<(Lang, FluentBundle<FluentResource>)>);

fn bundles() -> &'static Bundles {
    static BUNDLES: OnceLock<Bundles> = OnceLock::new();
    BUNDLES.get_or_init(|| Bundles(Lang::ALL.iter().map(|&lang| (lang, bundle(lang))).collect()))
}

fn source(lang: Lang) -> String {
    Catalogues::get(&format!("{}.ftl", lang.tag()))
        .map(|file| String::from_utf8_lossy(&file.data).into_owned())
        .unwrap_or_default()
}

/// A language's bundle; a catalogue that does not parse keeps what parsed (the test of the
/// catalogues fails on any error, so this only matters for a broken build).
fn bundle(lang: Lang) -> FluentBundle<FluentResource> {
    let id: LanguageIdentifier = lang.tag().parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // Isolation marks (U+2068/9) around arguments would show up in tests and copied text;
    // every language here is left-to-right.
    bundle.set_use_isolating(false);
    let resource = FluentResource::try_new(source(lang)).unwrap_or_else(|(partial, errors)| {
        tracing::error!(lang = lang.tag(), ?errors, "dashboard catalogue has errors");
        partial
    });
    if let Err(errors) = bundle.add_resource(resource) {
        tracing::error!(
            lang = lang.tag(),
            ?errors,
            "dashboard catalogue has duplicate keys"
        );
    }
    bundle
}

/// The message `key` in `lang`, with its arguments; English when the language lacks it, the
/// key itself when English does too (a test keeps that from shipping).
pub fn t(lang: Lang, key: &str, args: Option<&FluentArgs<'_>>) -> String {
    for candidate in [lang, Lang::En] {
        let Some((_, bundle)) = bundles().0.iter().find(|(l, _)| *l == candidate) else {
            continue;
        };
        if let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) {
            let mut errors = Vec::new();
            let text = bundle.format_pattern(pattern, args, &mut errors);
            if !errors.is_empty() {
                tracing::warn!(key, lang = candidate.tag(), ?errors, "dashboard message");
            }
            return text.into_owned();
        }
    }
    tracing::warn!(key, "dashboard message missing");
    key.to_owned()
}

/// The message ids of a catalogue, and the variables each uses (for the catalogue test).
#[cfg(test)]
fn keys(lang: Lang) -> Vec<(String, BTreeSet<String>)> {
    let mut keys: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in source(lang).lines() {
        let starts_message = line.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if starts_message && let Some((id, _)) = line.split_once('=') {
            keys.push((id.trim().to_owned(), BTreeSet::new()));
        }
        if let Some((_, variables)) = keys.last_mut() {
            let mut rest = line;
            while let Some(at) = rest.find("{ $") {
                let name: String = rest[at + 3..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                variables.insert(name);
                rest = &rest[at + 3..];
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_parses_and_has_exactly_the_english_keys_and_variables() {
        let english = keys(Lang::En);
        assert!(english.len() > 40, "{} keys", english.len());
        for lang in Lang::ALL {
            let text = source(lang);
            assert!(!text.is_empty(), "{} has no catalogue", lang.tag());
            if let Err((_, errors)) = FluentResource::try_new(text) {
                panic!("{}: {errors:?}", lang.tag());
            }
            let theirs = keys(lang);
            let names = |keys: &[(String, BTreeSet<String>)]| -> BTreeSet<String> {
                keys.iter().map(|(k, _)| k.clone()).collect()
            };
            let (ours, other) = (names(&english), names(&theirs));
            assert_eq!(
                ours.difference(&other).collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "{} lacks these keys",
                lang.tag()
            );
            assert_eq!(
                other.difference(&ours).collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "{} has keys English does not",
                lang.tag()
            );
            for (key, variables) in &english {
                let theirs = theirs.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                assert_eq!(Some(variables), theirs, "{}: {key}", lang.tag());
            }
        }
    }

    #[test]
    fn accept_language_picks_the_best_offer_we_speak() {
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr-CA,fr;q=0.9,en;q=0.8")), Lang::Fr);
        assert_eq!(
            Lang::negotiate(Some("de-DE,pt-BR;q=0.5,es;q=0.7")),
            Lang::Es
        );
        assert_eq!(Lang::negotiate(Some("pt-PT")), Lang::PtBr);
        assert_eq!(Lang::negotiate(Some("de, ja")), Lang::En);
        assert_eq!(Lang::negotiate(Some("it;q=0, en")), Lang::En);
    }

    #[test]
    fn messages_take_arguments_and_fall_back_to_english() {
        let mut args = FluentArgs::new();
        args.set("label", "ops");
        args.set("role", "viewer");
        assert_eq!(
            t(Lang::En, "signed-in-as", Some(&args)),
            "Signed in as ops (viewer)"
        );
        assert_eq!(t(Lang::Fr, "no-such-key", None), "no-such-key");
    }
}
