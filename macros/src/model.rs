//! The macro's input syntax: `name: ident, input: [dims], layers: [layer, ...], training: {..}?`
//! where a layer is `type` or `type { arg: value, ... }` and a value is an integer, a float, a
//! string, `true`/`false`, an identifier (`same`, `relu`, a layer name) or `[value, ...]`.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, Ident, LitBool, LitFloat, LitInt, LitStr, Token};

pub struct Decl {
    pub name: Ident,
    pub input: Vec<LitInt>,
    pub layers: Vec<Layer>,
    pub training: Vec<Arg>,
}

pub struct Layer {
    pub kind: Ident,
    pub args: Vec<Arg>,
}

pub struct Arg {
    pub key: Ident,
    pub value: Value,
}

pub enum Value {
    Int(LitInt),
    Float(LitFloat),
    Str(LitStr),
    Bool(LitBool),
    Ident(Ident),
    List(Vec<Value>),
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(syn::token::Bracket) {
            let content;
            bracketed!(content in input);
            let items = Punctuated::<Value, Token![,]>::parse_terminated(&content)?;
            return Ok(Value::List(items.into_iter().collect()));
        }
        if input.peek(LitInt) {
            return Ok(Value::Int(input.parse()?));
        }
        if input.peek(LitFloat) {
            return Ok(Value::Float(input.parse()?));
        }
        if input.peek(LitStr) {
            return Ok(Value::Str(input.parse()?));
        }
        if input.peek(LitBool) {
            return Ok(Value::Bool(input.parse()?));
        }
        if input.peek(Ident) {
            return Ok(Value::Ident(input.parse()?));
        }
        Err(input.error("expected a number, a string, true/false, a name or a [list]"))
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        Ok(Arg {
            key,
            value: input.parse()?,
        })
    }
}

fn parse_args(input: ParseStream) -> syn::Result<Vec<Arg>> {
    let content;
    braced!(content in input);
    Ok(Punctuated::<Arg, Token![,]>::parse_terminated(&content)?
        .into_iter()
        .collect())
}

impl Parse for Layer {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let kind: Ident = input.parse()?;
        let args = if input.peek(syn::token::Brace) {
            parse_args(input)?
        } else {
            Vec::new()
        };
        Ok(Layer { kind, args })
    }
}

impl Parse for Decl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let (mut name, mut dims, mut layers, mut training) = (None, None, None, Vec::new());
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![:]>()?;
            match key.to_string().as_str() {
                "name" => name = Some(input.parse::<Ident>()?),
                "input" => {
                    let content;
                    bracketed!(content in input);
                    dims = Some(
                        Punctuated::<LitInt, Token![,]>::parse_terminated(&content)?
                            .into_iter()
                            .collect(),
                    );
                }
                "layers" => {
                    let content;
                    bracketed!(content in input);
                    layers = Some(
                        Punctuated::<Layer, Token![,]>::parse_terminated(&content)?
                            .into_iter()
                            .collect(),
                    );
                }
                "training" => training = parse_args(input)?,
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown model key `{other}`: expected name, input, layers or training"),
                    ))
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        let span = input.span();
        Ok(Decl {
            name: name.ok_or_else(|| syn::Error::new(span, "missing `name: <ident>`"))?,
            input: dims.ok_or_else(|| syn::Error::new(span, "missing `input: [H, W, C]`"))?,
            layers: layers.ok_or_else(|| syn::Error::new(span, "missing `layers: [...]`"))?,
            training,
        })
    }
}
