//! `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Member, Result};

use crate::attrs;

pub(crate) fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let ident = &input.ident;
    attrs::reject_generics(&input.generics, ident, "events")?;
    let attrs = attrs::event_attrs(&input.attrs)?;
    let name = attrs.name.ok_or_else(|| {
        Error::new(
            ident.span(),
            format!(
                "missing wire name: add `#[event(name = \"context.event-name\", version = 1)]` \
                 to `{ident}`"
            ),
        )
    })?;
    let version = attrs.version.unwrap_or(1);
    let krate = attrs::tidings_path(attrs.krate);
    let ordering_key = match &attrs.key {
        Some(key) => {
            check_key(input, key)?;
            // A local trait, so a key that is not `Display` gets a message saying what to
            // do; spanned on the key, so the error points at `key = ..`.
            let value = quote_spanned!(key.span()=> OrderingKey::ordering_key(&self.#key));
            quote! {
                fn ordering_key(&self) -> ::core::option::Option<::std::string::String> {
                    #[diagnostic::on_unimplemented(
                        message = "`{Self}` cannot be an ordering key: it does not implement `Display`",
                        label = "the ordering key is this field's `to_string()`",
                        note = "implement `std::fmt::Display` for `{Self}`, or name another field in `key = ..`"
                    )]
                    trait OrderingKey {
                        fn ordering_key(&self) -> ::std::string::String;
                    }
                    impl<T: ::core::fmt::Display + ?::core::marker::Sized> OrderingKey for T {
                        fn ordering_key(&self) -> ::std::string::String {
                            ::std::string::ToString::to_string(self)
                        }
                    }
                    ::core::option::Option::Some(#value)
                }
            }
        }
        None => TokenStream::new(),
    };
    // Spanned on the type, so the on_unimplemented note of `SerdeEvent` points at it.
    let assert_serde = quote_spanned! {ident.span()=>
        const _: () = #krate::__private::assert_serde::<#ident>();
    };
    Ok(quote! {
        #assert_serde
        #[automatically_derived]
        impl #krate::Event for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            #ordering_key
            // The payload schema when `#ident` implements `schemars::JsonSchema` (found on
            // the concrete type; see tidings_core::catalog), none otherwise.
            #krate::__private::event_payload_schema!(#ident);
        }
    })
}

/// `key = field` must name a field of the struct.
fn check_key(input: &DeriveInput, key: &Member) -> Result<()> {
    let ident = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(Error::new(
            key.span(),
            format!("`key` names a struct field, but `{ident}` is not a struct: remove `key = ..`"),
        ));
    };
    let found = match (&data.fields, key) {
        (Fields::Named(fields), Member::Named(name)) => {
            fields.named.iter().any(|f| f.ident.as_ref() == Some(name))
        }
        (Fields::Unnamed(fields), Member::Unnamed(index)) => {
            (index.index as usize) < fields.unnamed.len()
        }
        _ => false,
    };
    if found {
        return Ok(());
    }
    let fields: Vec<String> = data
        .fields
        .members()
        .map(|m| format!("`{}`", quote!(#m)))
        .collect();
    let hint = match fields.is_empty() {
        true => "it has no fields: remove `key = ..`".to_owned(),
        false => format!("write one of {}", fields.join(", ")),
    };
    Err(Error::new(
        key.span(),
        format!(
            "`{ident}` has no field `{}` to use as ordering key: {hint}",
            quote!(#key)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn expand_str(input: DeriveInput) -> std::result::Result<String, String> {
        expand(&input)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn crate_names_where_tidings_is() {
        // Without `crate`, the lookup finds this package's (dev-)dependency tidings-core.
        let found = expand_str(parse_quote! {
            #[event(name = "lending.book-returned")]
            struct BookReturned;
        })
        .unwrap();
        assert!(
            found.contains("impl :: tidings_core :: Event for BookReturned"),
            "{found}"
        );
        let given = expand_str(parse_quote! {
            #[event(name = "lending.book-returned", crate = contracts::tidings)]
            struct BookReturned;
        })
        .unwrap();
        assert!(
            given.contains("impl contracts :: tidings :: Event for BookReturned")
                && given.contains("contracts :: tidings :: __private :: assert_serde"),
            "{given}"
        );
    }

    #[test]
    fn version_defaults_to_1_and_no_key_keeps_the_default_ordering_key() {
        let out = expand_str(parse_quote! {
            #[event(name = "lending.book-returned")]
            struct BookReturned { book_id: u64 }
        })
        .unwrap();
        assert!(
            out.contains("impl :: tidings_core :: Event for BookReturned"),
            "{out}"
        );
        assert!(
            out.contains("const NAME : & 'static str = \"lending.book-returned\""),
            "{out}"
        );
        assert!(out.contains("const VERSION : u32 = 1u32"), "{out}");
        assert!(out.contains("assert_serde :: < BookReturned >"), "{out}");
        assert!(!out.contains("ordering_key"), "{out}");
    }

    #[test]
    fn key_reads_the_named_or_indexed_field() {
        let out = expand_str(parse_quote! {
            #[event(name = "a.b", version = 4, key = book_id)]
            struct A { book_id: u64 }
        })
        .unwrap();
        assert!(out.contains("const VERSION : u32 = 4u32"), "{out}");
        assert!(out.contains("fn ordering_key"), "{out}");
        assert!(
            out.contains("OrderingKey :: ordering_key (& self . book_id)"),
            "{out}"
        );
        let out = expand_str(parse_quote!(
            #[event(name = "a.b", key = 1)]
            struct A(u8, u64);
        ));
        assert!(out.unwrap().contains("(& self . 1)"));
    }

    #[test]
    fn mistakes_say_what_to_write() {
        let err = expand_str(parse_quote!(
            struct BookBorrowed;
        ))
        .unwrap_err();
        assert_eq!(
            err,
            "missing wire name: add `#[event(name = \"context.event-name\", version = 1)]` to `BookBorrowed`"
        );
        let err = expand_str(parse_quote!(
            #[event(name = "a.b")]
            struct E<T>(T);
        ))
        .unwrap_err();
        assert!(err.starts_with("events must not be generic"), "{err}");
        let err = expand_str(parse_quote!(
            #[event(name = "a.b", version = 0)]
            struct E;
        ));
        assert!(err.unwrap_err().contains("`version = 1`"));
        let err = expand_str(parse_quote!(
            #[event(name = "a.b", key = id)]
            struct E {
                book_id: u64,
            }
        ));
        assert_eq!(
            err.unwrap_err(),
            "`E` has no field `id` to use as ordering key: write one of `book_id`"
        );
        let err = expand_str(parse_quote!(
            #[event(name = "a.b", kye = id)]
            struct E;
        ))
        .unwrap_err();
        assert!(
            err.contains("the valid keys are `name`, `version`, `key` and `crate`"),
            "{err}"
        );
    }
}
