//! [`Raised`]: the DataFusion error a task raised, in a form that crosses the wire, so
//! the coordinator can give the user the error single-node DataFusion would have given
//! (`Execution error: step can't be 0 ...`), not `External error: ...` around the text.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// The kinds of error rebuilt as themselves; any other travels as text only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(i32)]
pub enum ErrorKind {
    #[default]
    Other = 0,
    Execution = 1,
    Plan = 2,
    ResourcesExhausted = 3,
    NotImplemented = 4,
    Internal = 5,
    Configuration = 6,
    DivideByZero = 7,
    ArithmeticOverflow = 8,
    Cast = 9,
    Parse = 10,
    Compute = 11,
    InvalidArgument = 12,
}

impl ErrorKind {
    pub(crate) fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::Execution,
            2 => Self::Plan,
            3 => Self::ResourcesExhausted,
            4 => Self::NotImplemented,
            5 => Self::Internal,
            6 => Self::Configuration,
            7 => Self::DivideByZero,
            8 => Self::ArithmeticOverflow,
            9 => Self::Cast,
            10 => Self::Parse,
            11 => Self::Compute,
            12 => Self::InvalidArgument,
            _ => Self::Other,
        }
    }
}

/// A raised error's kind and its own text (without the kind's prefix).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raised {
    pub kind: ErrorKind,
    pub text: String,
}

impl Raised {
    /// What `err` is, looking through wrappers that add nothing to its text.
    pub fn of(err: &DataFusionError) -> Self {
        let (kind, text) = match err {
            DataFusionError::Shared(inner) => return Self::of(inner),
            DataFusionError::Diagnostic(_, inner) => return Self::of(inner),
            DataFusionError::Execution(s) => (ErrorKind::Execution, s),
            DataFusionError::Plan(s) => (ErrorKind::Plan, s),
            DataFusionError::ResourcesExhausted(s) => (ErrorKind::ResourcesExhausted, s),
            DataFusionError::NotImplemented(s) => (ErrorKind::NotImplemented, s),
            DataFusionError::Internal(s) => (ErrorKind::Internal, s),
            DataFusionError::Configuration(s) => (ErrorKind::Configuration, s),
            DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
                ArrowError::DivideByZero => (ErrorKind::DivideByZero, &String::new()),
                ArrowError::ArithmeticOverflow(s) => (ErrorKind::ArithmeticOverflow, s),
                ArrowError::CastError(s) => (ErrorKind::Cast, s),
                ArrowError::ParseError(s) => (ErrorKind::Parse, s),
                ArrowError::ComputeError(s) => (ErrorKind::Compute, s),
                ArrowError::InvalidArgumentError(s) => (ErrorKind::InvalidArgument, s),
                _ => return Self::default(),
            },
            _ => return Self::default(),
        };
        Self {
            kind,
            text: text.clone(),
        }
    }

    /// The error again, `place` (where it was raised) appended to its text; `None` for
    /// an error known only as text.
    pub fn rebuild(&self, place: &str) -> Option<DataFusionError> {
        let text = format!("{}{place}", self.text);
        // An arrow error's text can be fixed (`Divide by zero error`): the place goes in
        // the suffix DataFusion prints after it.
        let arrow =
            |e: ArrowError| DataFusionError::ArrowError(Box::new(e), Some(place.to_string()));
        let own = self.text.clone();
        Some(match self.kind {
            ErrorKind::Other => return None,
            ErrorKind::Execution => DataFusionError::Execution(text),
            ErrorKind::Plan => DataFusionError::Plan(text),
            ErrorKind::ResourcesExhausted => DataFusionError::ResourcesExhausted(text),
            ErrorKind::NotImplemented => DataFusionError::NotImplemented(text),
            ErrorKind::Internal => DataFusionError::Internal(text),
            ErrorKind::Configuration => DataFusionError::Configuration(text),
            ErrorKind::DivideByZero => arrow(ArrowError::DivideByZero),
            ErrorKind::ArithmeticOverflow => arrow(ArrowError::ArithmeticOverflow(own)),
            ErrorKind::Cast => arrow(ArrowError::CastError(own)),
            ErrorKind::Parse => arrow(ArrowError::ParseError(own)),
            ErrorKind::Compute => arrow(ArrowError::ComputeError(own)),
            ErrorKind::InvalidArgument => arrow(ArrowError::InvalidArgumentError(own)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_back_as_itself_with_its_place() {
        let place = " (stage 1, task 0, executor http://127.0.0.1:1)";
        let errors = [
            DataFusionError::Execution("step can't be 0".into()),
            DataFusionError::Plan("no such encoding".into()),
            DataFusionError::ResourcesExhausted("no memory".into()),
            DataFusionError::NotImplemented("that".into()),
            DataFusionError::Internal("a bug".into()),
            DataFusionError::Configuration("bad option".into()),
            DataFusionError::ArrowError(
                Box::new(ArrowError::CastError("'a' to Int64".into())),
                None,
            ),
            DataFusionError::ArrowError(Box::new(ArrowError::ComputeError("start".into())), None),
            DataFusionError::ArrowError(Box::new(ArrowError::ParseError("x".into())), None),
            DataFusionError::ArrowError(Box::new(ArrowError::ArithmeticOverflow("+".into())), None),
            DataFusionError::ArrowError(
                Box::new(ArrowError::InvalidArgumentError("y".into())),
                None,
            ),
        ];
        for err in errors {
            let raised = Raised::of(&err);
            let kind = ErrorKind::from_i32(raised.kind as i32);
            assert_eq!(kind, raised.kind);
            let again = Raised {
                kind,
                text: raised.text.clone(),
            }
            .rebuild(place)
            .expect("rebuilt");
            assert_eq!(Raised::of(&again).kind, raised.kind);
            if raised.kind != ErrorKind::Internal {
                // (DataFusion appends a plea for a bug report to internal errors' text.)
                assert_eq!(again.to_string(), format!("{err}{place}"));
            }
        }
        let divide = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
        let again = Raised::of(&divide).rebuild(place).expect("rebuilt");
        assert_eq!(again.to_string(), format!("{divide}{place}"));
        let wrapped =
            DataFusionError::Shared(std::sync::Arc::new(DataFusionError::Execution("z".into())));
        assert_eq!(Raised::of(&wrapped).kind, ErrorKind::Execution);
        let context = DataFusionError::Execution("z".into()).context("while loading");
        assert!(Raised::of(&context).rebuild(place).is_none());
    }
}
