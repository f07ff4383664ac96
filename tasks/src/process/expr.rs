//! The expression language of `filter` and `derive` steps: small, safe, and turned into a
//! polars expression, never evaluated as code.
//!
//! ```text
//! quality >= 6 && `fixed acidity` < 12.5
//! log(alcohol) * 2 - sulphates
//! is_null(pH) || !(density > 1)
//! ```
//!
//! Columns are bare names (letters, digits, `_`) or any text in backquotes; literals are
//! numbers, `"text"`, `true`, `false` and `null`. Operators, loosest first: `||`, `&&`,
//! comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`), `+ -`, `* / %`, unary `-` and `!`.
//! Functions: `abs`, `sqrt`, `log`, `exp`, `is_null`, `is_not_null`, `int`, `float`.

use polars::prelude::{DataType, Expr, col, lit};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ast {
    Column(String),
    Number(f64),
    Integer(i64),
    Text(String),
    Boolean(bool),
    Null,
    Unary(char, Box<Ast>),
    Binary(&'static str, Box<Ast>, Box<Ast>),
    Call(String, Vec<Ast>),
}

/// What is wrong with an expression, and where (a character offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position} of `{source_text}`")]
pub(crate) struct ExprError {
    message: String,
    position: usize,
    source_text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Column(String),
    Number(f64),
    Integer(i64),
    Text(String),
    Word(String),
    Operator(&'static str),
    Open,
    Close,
    Comma,
}

const OPERATORS: [&str; 17] = [
    "||", "&&", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", ",",
];

const FUNCTIONS: [(&str, usize); 8] = [
    ("abs", 1),
    ("sqrt", 1),
    ("log", 1),
    ("exp", 1),
    ("is_null", 1),
    ("is_not_null", 1),
    ("int", 1),
    ("float", 1),
];

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, (String, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
            continue;
        }
        let start = at;
        if c == '`' || c == '"' {
            let quote = c;
            at += 1;
            let mut value = String::new();
            loop {
                match chars.get(at) {
                    None => return Err((format!("unclosed {quote}"), start)),
                    Some(&next) if next == quote => {
                        at += 1;
                        break;
                    }
                    Some('\\') if quote == '"' => {
                        value.push(*chars.get(at + 1).ok_or(("unclosed \"".to_owned(), start))?);
                        at += 2;
                    }
                    Some(&next) => {
                        value.push(next);
                        at += 1;
                    }
                }
            }
            if quote == '`' {
                if value.is_empty() {
                    return Err(("empty column name".to_owned(), start));
                }
                tokens.push((start, Token::Column(value)));
            } else {
                tokens.push((start, Token::Text(value)));
            }
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(at + 1).is_some_and(char::is_ascii_digit)) {
            while at < chars.len()
                && (chars[at].is_ascii_digit()
                    || chars[at] == '.'
                    || chars[at] == '_'
                    || ((chars[at] == 'e' || chars[at] == 'E')
                        && chars.get(at + 1).is_some_and(|next| {
                            next.is_ascii_digit() || *next == '-' || *next == '+'
                        }))
                    || ((chars[at] == '-' || chars[at] == '+')
                        && matches!(chars[at - 1], 'e' | 'E')))
            {
                at += 1;
            }
            let literal: String = chars[start..at].iter().filter(|c| **c != '_').collect();
            let token = if literal.contains(['.', 'e', 'E']) {
                literal.parse().map(Token::Number).ok()
            } else {
                literal.parse().map(Token::Integer).ok()
            };
            tokens.push((
                start,
                token.ok_or((format!("bad number `{literal}`"), start))?,
            ));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
            tokens.push((start, Token::Word(chars[start..at].iter().collect())));
            continue;
        }
        let rest: String = chars[at..chars.len().min(at + 2)].iter().collect();
        let Some(operator) = OPERATORS
            .iter()
            .find(|operator| rest.starts_with(**operator))
        else {
            return Err((format!("unexpected `{c}`"), start));
        };
        at += operator.chars().count();
        tokens.push((
            start,
            match *operator {
                "(" => Token::Open,
                ")" => Token::Close,
                "," => Token::Comma,
                other => Token::Operator(other),
            },
        ));
    }
    Ok(tokens)
}

/// The most tokens an expression may have. Operators of one strength chain to the left, so a
/// tree can be as deep as the expression is long, and walking, converting and dropping it
/// recurse once per level: the bound keeps that far from the stack's end.
const MAX_TOKENS: usize = 1_000;

/// How deeply parentheses, calls and prefix operators may nest (the parser recurses per level).
const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
    /// How many nested levels the parser is in now.
    depth: usize,
}

/// Binding strength of binary operators; higher binds tighter.
fn precedence(operator: &str) -> Option<u8> {
    Some(match operator {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" | "<" | "<=" | ">" | ">=" => 3,
        "+" | "-" => 4,
        "*" | "/" | "%" => 5,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(at, _)| *at)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, (String, usize)> {
        Err((message.into(), self.position()))
    }

    /// Runs `parse` one level deeper, refusing past [`MAX_NESTING`].
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Parser) -> Result<Ast, (String, usize)>,
    ) -> Result<Ast, (String, usize)> {
        if self.depth >= MAX_NESTING {
            return self.fail(format!(
                "the expression nests more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    fn expression(&mut self, min: u8) -> Result<Ast, (String, usize)> {
        self.nested(|parser| parser.binary(min))
    }

    fn binary(&mut self, min: u8) -> Result<Ast, (String, usize)> {
        let mut left = self.unary()?;
        while let Some(Token::Operator(operator)) = self.peek() {
            let operator = *operator;
            let Some(strength) = precedence(operator) else {
                return self.fail(format!("unexpected `{operator}`"));
            };
            if strength < min {
                break;
            }
            self.next += 1;
            let right = self.expression(strength + 1)?;
            left = Ast::Binary(operator, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Ast, (String, usize)> {
        self.nested(Parser::prefixed)
    }

    fn prefixed(&mut self) -> Result<Ast, (String, usize)> {
        match self.peek() {
            Some(Token::Operator("-")) => {
                self.next += 1;
                Ok(Ast::Unary('-', Box::new(self.unary()?)))
            }
            Some(Token::Operator("!")) => {
                self.next += 1;
                Ok(Ast::Unary('!', Box::new(self.unary()?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Ast, (String, usize)> {
        let Some((_, token)) = self.tokens.get(self.next).cloned() else {
            return self.fail("the expression ends too early");
        };
        self.next += 1;
        match token {
            Token::Column(name) => Ok(Ast::Column(name)),
            Token::Number(value) => Ok(Ast::Number(value)),
            Token::Integer(value) => Ok(Ast::Integer(value)),
            Token::Text(value) => Ok(Ast::Text(value)),
            Token::Open => {
                let inner = self.expression(0)?;
                if self.peek() != Some(&Token::Close) {
                    return self.fail("expected `)`");
                }
                self.next += 1;
                Ok(inner)
            }
            Token::Word(word) => match word.as_str() {
                "true" => Ok(Ast::Boolean(true)),
                "false" => Ok(Ast::Boolean(false)),
                "null" => Ok(Ast::Null),
                _ if self.peek() == Some(&Token::Open) => {
                    self.next -= 1;
                    self.call(word)
                }
                _ => Ok(Ast::Column(word)),
            },
            Token::Operator(operator) => {
                self.next -= 1;
                self.fail(format!("unexpected `{operator}`"))
            }
            Token::Close | Token::Comma => {
                self.next -= 1;
                self.fail("expected a value")
            }
        }
    }

    fn call(&mut self, name: String) -> Result<Ast, (String, usize)> {
        let Some((_, arity)) = FUNCTIONS.iter().find(|(known, _)| *known == name) else {
            let known: Vec<&str> = FUNCTIONS.iter().map(|(known, _)| *known).collect();
            return self.fail(format!(
                "unknown function `{name}` (known: {})",
                known.join(", ")
            ));
        };
        self.next += 2;
        let mut arguments = Vec::new();
        if self.peek() != Some(&Token::Close) {
            loop {
                arguments.push(self.expression(0)?);
                match self.peek() {
                    Some(Token::Comma) => self.next += 1,
                    Some(Token::Close) => break,
                    _ => return self.fail("expected `,` or `)`"),
                }
            }
        }
        self.next += 1;
        if arguments.len() != *arity {
            return self.fail(format!(
                "`{name}` takes {arity} argument(s), got {}",
                arguments.len()
            ));
        }
        Ok(Ast::Call(name, arguments))
    }
}

/// Parses an expression; the error names the problem and its position.
pub(crate) fn parse(text: &str) -> Result<Ast, ExprError> {
    let error = |(message, position): (String, usize)| ExprError {
        message,
        position,
        source_text: text.to_owned(),
    };
    let tokens = tokenize(text).map_err(error)?;
    if let Some(&(position, _)) = tokens.get(MAX_TOKENS) {
        return Err(error((
            format!("the expression is longer than {MAX_TOKENS} tokens"),
            position,
        )));
    }
    let mut parser = Parser {
        tokens,
        next: 0,
        end: text.chars().count(),
        depth: 0,
    };
    let ast = parser.expression(0).map_err(error)?;
    if parser.next < parser.tokens.len() {
        return Err(error((
            "unexpected text after the expression".to_owned(),
            parser.position(),
        )));
    }
    Ok(ast)
}

impl Ast {
    /// Every column the expression reads.
    pub(crate) fn columns(&self, into: &mut Vec<String>) {
        match self {
            Ast::Column(name) => into.push(name.clone()),
            Ast::Unary(_, inner) => inner.columns(into),
            Ast::Binary(_, left, right) => {
                left.columns(into);
                right.columns(into);
            }
            Ast::Call(_, arguments) => arguments.iter().for_each(|argument| argument.columns(into)),
            Ast::Number(_) | Ast::Integer(_) | Ast::Text(_) | Ast::Boolean(_) | Ast::Null => {}
        }
    }

    /// The polars expression.
    pub(crate) fn to_polars(&self) -> Expr {
        match self {
            Ast::Column(name) => col(name.as_str()),
            Ast::Number(value) => lit(*value),
            Ast::Integer(value) => lit(*value),
            Ast::Text(value) => lit(value.clone()),
            Ast::Boolean(value) => lit(*value),
            Ast::Null => lit(polars::prelude::NULL),
            Ast::Unary('-', inner) => lit(0) - inner.to_polars(),
            Ast::Unary(_, inner) => inner.to_polars().not(),
            Ast::Binary(operator, left, right) => {
                let (left, right) = (left.to_polars(), right.to_polars());
                match *operator {
                    "||" => left.or(right),
                    "&&" => left.and(right),
                    "==" => left.eq(right),
                    "!=" => left.neq(right),
                    "<" => left.lt(right),
                    "<=" => left.lt_eq(right),
                    ">" => left.gt(right),
                    ">=" => left.gt_eq(right),
                    "+" => left + right,
                    "-" => left - right,
                    "*" => left * right,
                    // True division, so that integer columns divide as people expect.
                    "/" => left.cast(DataType::Float64) / right.cast(DataType::Float64),
                    _ => left % right,
                }
            }
            Ast::Call(name, arguments) => {
                let argument = arguments
                    .first()
                    .map_or(lit(polars::prelude::NULL), Ast::to_polars);
                match name.as_str() {
                    "abs" => argument.abs(),
                    "sqrt" => argument.cast(DataType::Float64).sqrt(),
                    "log" => argument
                        .cast(DataType::Float64)
                        .log(lit(std::f64::consts::E)),
                    "exp" => argument.cast(DataType::Float64).exp(),
                    "is_null" => argument.is_null(),
                    "is_not_null" => argument.is_not_null(),
                    "int" => argument.cast(DataType::Int64),
                    _ => argument.cast(DataType::Float64),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(text: &str, expected: Expect) {
        let rendered = match parse(text) {
            Ok(ast) => format!("{ast:?}"),
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&rendered);
    }

    #[test]
    fn hostile_depth_and_length_are_refused_not_recursed_into() {
        // Each of these overflowed the stack before the bounds at 100,000 levels: a parse, a
        // walk or a drop recursing once per character. Such a text is refused by its length
        // first (below); 300 levels stay inside the length and meet the nesting bound.
        let deep = |open: &str, close: &str| format!("{}x{}", open.repeat(300), close.repeat(300));
        for text in [
            deep("(", ")"),
            deep("-", ""),
            deep("!", ""),
            deep("abs(", ")"),
        ] {
            let error = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains("nests more than 64 levels"), "{error}");
        }
        for long in [vec!["x"; 100_000].join(" + "), "(".repeat(100_000)] {
            let error = parse(&long).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains("longer than 1000 tokens"), "{error}");
        }
        // The bounds leave room for real expressions.
        let sum = vec!["x"; 400].join(" + ");
        assert!(parse(&sum).is_ok());
        assert!(parse(&format!("{}x{}", "(".repeat(30), ")".repeat(30))).is_ok());
    }

    #[test]
    fn precedence_and_columns() {
        check(
            "quality >= 6 && `fixed acidity` < 12.5",
            expect![[
                r#"Binary("&&", Binary(">=", Column("quality"), Integer(6)), Binary("<", Column("fixed acidity"), Number(12.5)))"#
            ]],
        );
        check(
            "1 + 2 * -x",
            expect![[
                r#"Binary("+", Integer(1), Binary("*", Integer(2), Unary('-', Column("x"))))"#
            ]],
        );
        check(
            "!(is_null(pH) || a != \"b\\\"c\")",
            expect![[
                r#"Unary('!', Binary("||", Call("is_null", [Column("pH")]), Binary("!=", Column("a"), Text("b\"c"))))"#
            ]],
        );
        check(
            "1e-3 * 2_000",
            expect![[r#"Binary("*", Number(0.001), Integer(2000))"#]],
        );
    }

    #[test]
    fn errors_name_the_problem_and_where() {
        check(
            "a >",
            expect!["error: the expression ends too early at position 3 of `a >`"],
        );
        check(
            "a ) b",
            expect!["error: unexpected text after the expression at position 2 of `a ) b`"],
        );
        check(
            "shell(\"rm\")",
            expect![
                "error: unknown function `shell` (known: abs, sqrt, log, exp, is_null, is_not_null, int, float) at position 0 of `shell(\"rm\")`"
            ],
        );
        check(
            "abs(a, b)",
            expect!["error: `abs` takes 1 argument(s), got 2 at position 9 of `abs(a, b)`"],
        );
        check("`x", expect!["error: unclosed ` at position 0 of ``x`"]);
        check(
            "a $ b",
            expect!["error: unexpected `$` at position 2 of `a $ b`"],
        );
    }

    #[test]
    fn columns_are_collected() {
        let mut columns = Vec::new();
        parse("log(a) + b * `c d`").unwrap().columns(&mut columns);
        assert_eq!(columns, ["a", "b", "c d"]);
    }
}
