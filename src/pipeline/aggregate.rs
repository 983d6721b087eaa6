//! Aggregations: what a keyed or windowed stage computes per key.
//!
//! Owns the [`Aggregator`] trait (init / add / merge / result over a
//! serialisable accumulator) and the built-in [`Count`], [`Sum`], [`Min`],
//! [`Max`] and [`Reduce`]. Aggregators are pure: they never see keys,
//! windows or time, and never allocate per record unless the user's
//! accumulator does.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::ops::Add;

/// Folds records of type `T` into an accumulator and reads a result from it.
///
/// `merge` must combine two accumulators as if their inputs had been added
/// to one; session windows rely on it when sessions merge.
///
/// ```
/// use weir::pipeline::{Aggregator, Count};
/// let c = Count;
/// let mut acc = Aggregator::<&str>::init(&c);
/// Aggregator::<&str>::add(&c, &mut acc, &"x");
/// Aggregator::<&str>::add(&c, &mut acc, &"y");
/// assert_eq!(Aggregator::<&str>::result(&c, &acc), 2);
/// ```
pub trait Aggregator<T>: Clone + Send + 'static {
    /// The running state for one key (and window).
    type Acc: Clone + Send + Serialize + DeserializeOwned + 'static;
    /// The value emitted.
    type Out: Send + 'static;

    /// A fresh accumulator.
    fn init(&self) -> Self::Acc;
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, value: &T);
    /// Adds everything `other` holds into `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// The value for the current accumulator.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// Counts records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl<T> Aggregator<T> for Count {
    type Acc = u64;
    type Out = u64;

    #[inline]
    fn init(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _value: &T) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// Sums a numeric field taken from each record.
///
/// ```
/// use weir::pipeline::Sum;
/// let total = Sum::of(|x: &(u32, i64)| x.1);
/// # let _ = total;
/// ```
pub struct Sum<F, T, N> {
    field: F,
    _types: PhantomData<fn(&T) -> N>,
}

impl<F: Clone, T, N> Clone for Sum<F, T, N> {
    fn clone(&self) -> Self {
        Sum {
            field: self.field.clone(),
            _types: PhantomData,
        }
    }
}

impl<F, T, N> Sum<F, T, N>
where
    F: Fn(&T) -> N,
{
    /// Sums `field(record)`.
    pub fn of(field: F) -> Self {
        Sum {
            field,
            _types: PhantomData,
        }
    }
}

impl<F, T, N> Aggregator<T> for Sum<F, T, N>
where
    F: Fn(&T) -> N + Clone + Send + Sync + 'static,
    T: 'static,
    N: Add<Output = N> + Default + Copy + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = N;
    type Out = N;

    #[inline]
    fn init(&self) -> N {
        N::default()
    }
    #[inline]
    fn add(&self, acc: &mut N, value: &T) {
        *acc = *acc + (self.field)(value);
    }
    fn merge(&self, acc: &mut N, other: N) {
        *acc = *acc + other;
    }
    fn result(&self, acc: &N) -> N {
        *acc
    }
}

macro_rules! extremum {
    ($name:ident, $doc:literal, $better:path) => {
        #[doc = $doc]
        pub struct $name<F, T, N> {
            field: F,
            _types: PhantomData<fn(&T) -> N>,
        }

        impl<F: Clone, T, N> Clone for $name<F, T, N> {
            fn clone(&self) -> Self {
                $name {
                    field: self.field.clone(),
                    _types: PhantomData,
                }
            }
        }

        impl<F, T, N> $name<F, T, N>
        where
            F: Fn(&T) -> N,
        {
            /// Over `field(record)`.
            pub fn of(field: F) -> Self {
                $name {
                    field,
                    _types: PhantomData,
                }
            }
        }

        impl<F, T, N> Aggregator<T> for $name<F, T, N>
        where
            F: Fn(&T) -> N + Clone + Send + Sync + 'static,
            T: 'static,
            N: PartialOrd + Copy + Send + Serialize + DeserializeOwned + 'static,
        {
            type Acc = Option<N>;
            type Out = Option<N>;

            fn init(&self) -> Option<N> {
                None
            }
            #[inline]
            fn add(&self, acc: &mut Option<N>, value: &T) {
                let v = (self.field)(value);
                match acc {
                    Some(cur) if v.partial_cmp(cur) != Some($better) => {}
                    _ => *acc = Some(v),
                }
            }
            fn merge(&self, acc: &mut Option<N>, other: Option<N>) {
                if let Some(v) = other {
                    match acc {
                        Some(cur) if v.partial_cmp(cur) != Some($better) => {}
                        _ => *acc = Some(v),
                    }
                }
            }
            fn result(&self, acc: &Option<N>) -> Option<N> {
                *acc
            }
        }
    };
}

extremum!(
    Min,
    "The smallest value of a field (`None` for no record).",
    std::cmp::Ordering::Less
);
extremum!(
    Max,
    "The largest value of a field (`None` for no record).",
    std::cmp::Ordering::Greater
);

/// Folds records with a user function `f(acc, record) -> acc`, starting from
/// the first record; merging applies `f` to the two values.
pub struct Reduce<F, T> {
    f: F,
    _types: PhantomData<fn(T) -> T>,
}

impl<F: Clone, T> Clone for Reduce<F, T> {
    fn clone(&self) -> Self {
        Reduce {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<F, T> Reduce<F, T>
where
    F: Fn(&T, &T) -> T,
{
    /// Reduces with `f`.
    pub fn with(f: F) -> Self {
        Reduce {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, T> Aggregator<T> for Reduce<F, T>
where
    F: Fn(&T, &T) -> T + Clone + Send + Sync + 'static,
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = Option<T>;
    type Out = T;

    fn init(&self) -> Option<T> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<T>, value: &T) {
        *acc = Some(match acc.take() {
            Some(cur) => (self.f)(&cur, value),
            None => value.clone(),
        });
    }
    fn merge(&self, acc: &mut Option<T>, other: Option<T>) {
        if let Some(v) = other {
            self.add(acc, &v);
        }
    }
    fn result(&self, acc: &Option<T>) -> T {
        acc.clone()
            .expect("a reduce accumulator is only read after a record was added")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<A: Aggregator<i64>>(a: &A, xs: &[i64]) -> A::Out {
        let mut acc = a.init();
        for x in xs {
            a.add(&mut acc, x);
        }
        a.result(&acc)
    }

    #[test]
    fn builtins() {
        let xs = [5, -2, 9, 3];
        assert_eq!(run(&Count, &xs), 4);
        assert_eq!(run(&Sum::of(|x: &i64| *x), &xs), 15);
        assert_eq!(run(&Min::of(|x: &i64| *x), &xs), Some(-2));
        assert_eq!(run(&Max::of(|x: &i64| *x), &xs), Some(9));
        assert_eq!(run(&Max::of(|x: &i64| *x), &[]), None);
        assert_eq!(
            run(&Reduce::with(|a: &i64, b: &i64| a * 10 + b), &[1, 2, 3]),
            123
        );
    }

    #[test]
    fn merge_equals_sequential() {
        let s = Sum::of(|x: &i64| *x);
        let mut a = s.init();
        let mut b = s.init();
        s.add(&mut a, &4);
        s.add(&mut b, &6);
        s.merge(&mut a, b);
        assert_eq!(s.result(&a), 10);
        let m = Min::of(|x: &i64| *x);
        let mut a = m.init();
        let mut b = m.init();
        m.add(&mut a, &4);
        m.add(&mut b, &-6);
        m.merge(&mut a, b);
        assert_eq!(m.result(&a), Some(-6));
    }
}
