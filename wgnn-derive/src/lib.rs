//! `#[derive(Module)]` for wgnn (re-exported as `wgnn::nn::Module`, beside the trait):
//! implements `wgnn::nn::ModuleFields` for a struct, which gives `Module` its
//! parameters' PyTorch names, training mode, buffers and device moves; the user
//! writes `impl Module for T { fn forward(..) }` only.
//!
//! What each field is, read from its type:
//! - `Tensor` or `Option<Tensor>`: a parameter named by the field;
//! - `Vec<Tensor>`: parameters `field.0`, `field.1`, …;
//! - `Vec<M>`: child modules `field.0`, `field.1`, … (as `nn.ModuleList`);
//! - `Option<M>`: a child module when present;
//! - anything else: a child module named by the field (it must implement `Module`);
//! - `#[module(buffer)]` on a `Tensor` field: a buffer (saved, moved, never trained);
//! - `#[module(skip)]`: a plain field (a size, a flag), not part of the module tree.
//!
//! Tuple structs name their fields `0`, `1`, …; unit structs have no members.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{parse_macro_input, Data, DeriveInput, Fields, GenericArgument, Index, PathArguments, Type};

/// What a field is to the module tree.
enum Kind {
    Parameter,
    OptionalParameter,
    Parameters,
    Buffer,
    Child,
    OptionalChild,
    Children,
    Skip,
}

/// `Some(T)` for a type written `Wrapper<T>` (the last path segment named `wrapper`).
fn inner<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

/// Whether the type is written `Tensor` (any path ending in it).
fn is_tensor(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Tensor" && s.arguments.is_empty()))
}

fn kind(field: &syn::Field) -> syn::Result<Kind> {
    let mut marked = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                marked = Some(Kind::Skip);
                Ok(())
            } else if meta.path.is_ident("buffer") {
                marked = Some(Kind::Buffer);
                Ok(())
            } else {
                Err(meta.error("expected #[module(skip)] or #[module(buffer)]"))
            }
        })?;
    }
    if let Some(kind) = marked {
        if matches!(kind, Kind::Buffer) && !is_tensor(&field.ty) {
            return Err(syn::Error::new_spanned(
                &field.ty,
                "#[module(buffer)] needs a field of type Tensor",
            ));
        }
        return Ok(kind);
    }
    let ty = &field.ty;
    Ok(if is_tensor(ty) {
        Kind::Parameter
    } else if inner(ty, "Option").is_some_and(is_tensor) {
        Kind::OptionalParameter
    } else if inner(ty, "Vec").is_some_and(is_tensor) {
        Kind::Parameters
    } else if inner(ty, "Vec").is_some() {
        Kind::Children
    } else if inner(ty, "Option").is_some() {
        Kind::OptionalChild
    } else {
        Kind::Child
    })
}

/// `#[derive(Module)]`: see the crate's documentation.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(Module)] works on structs: their fields are the children",
        ));
    };
    let members: Vec<(String, Tokens, Kind)> = match &data.fields {
        Fields::Named(fields) => fields
            .named
            .iter()
            .map(|f| {
                let ident = f.ident.as_ref().expect("a named field");
                Ok((ident.to_string(), quote!(#ident), kind(f)?))
            })
            .collect::<syn::Result<_>>()?,
        Fields::Unnamed(fields) => fields
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let index = Index::from(i);
                Ok((i.to_string(), quote!(#index), kind(f)?))
            })
            .collect::<syn::Result<_>>()?,
        Fields::Unit => Vec::new(),
    };
    let wgnn = quote!(::wgnn);
    let (shared, exclusive): (Vec<Tokens>, Vec<Tokens>) = members
        .iter()
        .filter(|(_, _, k)| !matches!(k, Kind::Skip))
        .map(|(name, access, kind)| member(&wgnn, name, access, kind))
        .unzip();
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let out = format_ident!("out");
    Ok(quote! {
        impl #impl_generics #wgnn::nn::ModuleFields for #ident #ty_generics #where_clause {
            fn members(&self) -> ::std::vec::Vec<(::std::string::String, #wgnn::nn::Member<'_>)> {
                #[allow(unused_mut)]
                let mut #out = ::std::vec::Vec::new();
                #(#shared)*
                #out
            }
            fn members_mut(&mut self) -> ::std::vec::Vec<(::std::string::String, #wgnn::nn::MemberMut<'_>)> {
                #[allow(unused_mut)]
                let mut #out = ::std::vec::Vec::new();
                #(#exclusive)*
                #out
            }
        }
    })
}

/// The statements pushing one field's members, for `members` and for `members_mut`.
fn member(wgnn: &Tokens, name: &str, access: &Tokens, kind: &Kind) -> (Tokens, Tokens) {
    let one = |variant: Tokens, mutability: Tokens, value: Tokens| {
        quote! { out.push((::std::string::String::from(#name), #wgnn::nn::#variant(#mutability #value))); }
    };
    let many = |variant: Tokens, iter: Tokens| {
        quote! {
            for (i, item) in self.#access.#iter().enumerate() {
                out.push((::std::format!("{}.{}", #name, i), #wgnn::nn::#variant(item)));
            }
        }
    };
    match kind {
        Kind::Parameter => (
            one(quote!(Member::Parameter), quote!(&), quote!(self.#access)),
            one(quote!(MemberMut::Parameter), quote!(&mut), quote!(self.#access)),
        ),
        Kind::Buffer => (
            one(quote!(Member::Buffer), quote!(&), quote!(self.#access)),
            one(quote!(MemberMut::Buffer), quote!(&mut), quote!(self.#access)),
        ),
        Kind::Child => (
            one(quote!(Member::Child), quote!(&), quote!(self.#access)),
            one(quote!(MemberMut::Child), quote!(&mut), quote!(self.#access)),
        ),
        Kind::OptionalParameter | Kind::OptionalChild => {
            let (shared, exclusive) = if matches!(kind, Kind::OptionalParameter) {
                (quote!(Member::Parameter), quote!(MemberMut::Parameter))
            } else {
                (quote!(Member::Child), quote!(MemberMut::Child))
            };
            (
                quote! {
                    if let ::std::option::Option::Some(item) = &self.#access {
                        out.push((::std::string::String::from(#name), #wgnn::nn::#shared(item)));
                    }
                },
                quote! {
                    if let ::std::option::Option::Some(item) = &mut self.#access {
                        out.push((::std::string::String::from(#name), #wgnn::nn::#exclusive(item)));
                    }
                },
            )
        }
        Kind::Parameters => (
            many(quote!(Member::Parameter), quote!(iter)),
            many(quote!(MemberMut::Parameter), quote!(iter_mut)),
        ),
        Kind::Children => (
            many(quote!(Member::Child), quote!(iter)),
            many(quote!(MemberMut::Child), quote!(iter_mut)),
        ),
        Kind::Skip => unreachable!("skipped fields are filtered out"),
    }
}
