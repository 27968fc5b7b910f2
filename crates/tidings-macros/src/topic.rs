//! `#[derive(Topic)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Ident, Result, Type, Variant};

use crate::attrs;

/// One variant of the topic enum: `BookBorrowed(BookBorrowed)`.
struct Member<'a> {
    variant: &'a Ident,
    ty: &'a Type,
    /// The type as written, without spaces: `BookBorrowed`, `contracts::BookBorrowed`.
    type_name: String,
}

pub(crate) fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let ident = &input.ident;
    let Data::Enum(data) = &input.data else {
        return Err(Error::new(
            ident.span(),
            format!(
                "`#[derive(Topic)]` goes on an enum whose variants each wrap one event: \
                 `enum {ident} {{ BookBorrowed(BookBorrowed), BookReturned(BookReturned) }}`"
            ),
        ));
    };
    attrs::reject_generics(&input.generics, ident, "topics")?;
    let attrs = attrs::topic_attrs(&input.attrs)?;
    let krate = attrs::tidings_path(attrs.krate);
    let name = attrs.name.ok_or_else(|| {
        Error::new(
            ident.span(),
            format!(
                "missing topic name: add `#[topic(name = \"context\")]` to `{ident}`, \
                 e.g. `#[topic(name = \"lending\")]`"
            ),
        )
    })?;
    let members = members(data.variants.iter())?;
    if members.is_empty() {
        return Err(Error::new(
            ident.span(),
            format!(
                "`{ident}` has no events: add a variant per event, \
                 e.g. `BookBorrowed(BookBorrowed)`"
            ),
        ));
    }

    let variants: Vec<_> = members.iter().map(|m| m.variant).collect();
    let types: Vec<_> = members.iter().map(|m| m.ty).collect();
    // `<Type as Event>`, spanned on the variant's type: a type that is not an event gets
    // one error there (rustc merges identical ones) instead of one per use.
    let events: Vec<_> = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> <#ty as #krate::Event>))
        .collect();
    let type_names = members.iter().map(|m| &m.type_name);
    let distinct_names = distinct_wire_names(&krate, ident, &members);

    Ok(quote! {
        #[automatically_derived]
        impl #krate::Topic for #ident {
            const NAME: &'static str = #name;
            fn events() -> &'static [#krate::EventInfo] {
                const EVENTS: &[#krate::EventInfo] = &[#(#krate::EventInfo {
                    name: #events::NAME,
                    version: #events::VERSION,
                    type_name: #type_names,
                }),*];
                EVENTS
            }
            fn event_schema(
                event: &str,
            ) -> ::core::option::Option<#krate::__private::serde_json::Value> {
                #(if event == #events::NAME {
                    return #events::payload_schema();
                })*
                ::core::option::Option::None
            }
        }

        #(
            #[automatically_derived]
            impl #krate::TopicMember for #types {
                type Topic = #ident;
            }

            #[automatically_derived]
            impl ::core::convert::From<#types> for #ident {
                fn from(event: #types) -> Self {
                    Self::#variants(event)
                }
            }
        )*

        #[automatically_derived]
        impl #krate::Publishable for #ident {
            type Topic = Self;
            fn event_name(&self) -> &'static str {
                match self { #(Self::#variants(_) => #events::NAME,)* }
            }
            fn event_version(&self) -> u32 {
                match self { #(Self::#variants(_) => #events::VERSION,)* }
            }
            fn event_ordering_key(&self) -> ::core::option::Option<::std::string::String> {
                match self { #(Self::#variants(event) => #krate::Event::ordering_key(event),)* }
            }
            fn encode(&self, codec: #krate::Codec) -> #krate::Result<::std::vec::Vec<u8>> {
                match self { #(Self::#variants(event) => codec.encode(event),)* }
            }
        }

        #distinct_names
    })
}

/// Every variant must be `Name(EventType)`, each event type in one variant only. Reports
/// every bad variant at once.
fn members<'a>(variants: impl Iterator<Item = &'a Variant>) -> Result<Vec<Member<'a>>> {
    let mut members: Vec<Member<'a>> = Vec::new();
    let mut errors: Option<Error> = None;
    let mut push = |e: Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for v in variants {
        let variant = &v.ident;
        let ty = match &v.fields {
            Fields::Unnamed(f) if f.unnamed.len() == 1 => &f.unnamed[0].ty,
            _ => {
                push(Error::new_spanned(
                    v,
                    format!(
                        "topic variant `{variant}` must wrap exactly one event type: \
                         write `{variant}({variant})`, where `{variant}` is a `#[derive(Event)]` type"
                    ),
                ));
                continue;
            }
        };
        let type_name = ty.to_token_stream().to_string().replace(' ', "");
        if let Some(first) = members.iter().find(|m| m.type_name == type_name) {
            push(Error::new_spanned(
                ty,
                format!(
                    "`{type_name}` is already in this topic as variant `{}`: \
                     each event type goes in one variant; remove `{variant}`",
                    first.variant
                ),
            ));
            continue;
        }
        members.push(Member {
            variant,
            ty,
            type_name,
        });
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(members),
    }
}

/// A const assertion per pair of events: equal wire names fail the build with a message
/// naming both types (the names themselves are only known after macro expansion).
fn distinct_wire_names(krate: &TokenStream, topic: &Ident, members: &[Member<'_>]) -> TokenStream {
    let mut checks = TokenStream::new();
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            let (ta, tb) = (a.ty, b.ty);
            let msg = format!(
                "two events of topic `{topic}` have the same wire name: `{}` and `{}`; \
                 give each a distinct #[event(name = ..)]",
                a.type_name, b.type_name
            );
            checks.extend(quote_spanned! {tb.span()=>
                const _: () = if #krate::__private::str_eq(
                    <#ta as #krate::Event>::NAME,
                    <#tb as #krate::Event>::NAME,
                ) {
                    ::core::panic!("{}", #msg)
                };
            });
        }
    }
    checks
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
    fn implements_topic_publishable_and_per_variant_member_and_from() {
        let out = expand_str(parse_quote! {
            #[topic(name = "lending")]
            enum LendingEvents { Borrowed(BookBorrowed), Returned(contracts::BookReturned) }
        })
        .unwrap();
        for expected in [
            "impl :: tidings_core :: Topic for LendingEvents",
            "const NAME : & 'static str = \"lending\"",
            "type_name : \"BookBorrowed\"",
            "type_name : \"contracts::BookReturned\"",
            "impl :: tidings_core :: TopicMember for BookBorrowed { type Topic = LendingEvents ; }",
            "impl :: tidings_core :: TopicMember for contracts :: BookReturned",
            "impl :: core :: convert :: From < BookBorrowed > for LendingEvents",
            "impl :: tidings_core :: Publishable for LendingEvents",
            "Self :: Returned (event) => codec . encode (event)",
        ] {
            assert!(out.contains(expected), "missing `{expected}` in {out}");
        }
    }

    #[test]
    fn every_pair_of_events_gets_a_distinct_name_check() {
        let out = expand_str(parse_quote! {
            #[topic(name = "t")] enum T { A(A), B(B), C(C) }
        })
        .unwrap();
        assert_eq!(out.matches("str_eq").count(), 3, "{out}");
        assert!(out.contains("two events of topic `T` have the same wire name: `A` and `C`"));
    }

    #[test]
    fn mistakes_say_what_to_write() {
        let err = expand_str(parse_quote!(
            enum T {
                A(A),
            }
        ))
        .unwrap_err();
        assert!(err.starts_with("missing topic name: add `#[topic(name = \"context\")]` to `T`"));
        let err = expand_str(parse_quote!(
            #[topic(name = "t")]
            struct T;
        ))
        .unwrap_err();
        assert!(
            err.starts_with("`#[derive(Topic)]` goes on an enum"),
            "{err}"
        );
        let err = expand_str(parse_quote!(
            #[topic(name = "t")]
            enum T {}
        ))
        .unwrap_err();
        assert!(err.starts_with("`T` has no events"), "{err}");
        let err = expand_str(parse_quote!(
            #[topic(name = "t")]
            enum T {
                A(A),
                B { b: B },
            }
        ));
        assert_eq!(
            err.unwrap_err(),
            "topic variant `B` must wrap exactly one event type: write `B(B)`, where `B` is a `#[derive(Event)]` type"
        );
        let err = expand_str(parse_quote!(
            #[topic(name = "t")]
            enum T {
                A(A),
                B(A),
            }
        ));
        assert!(err
            .unwrap_err()
            .starts_with("`A` is already in this topic as variant `A`"));
    }
}
