//! One macro that turns a single list into a numeric enum and everything derived from it.

/// Defines a fieldless `#[repr($repr)]` enum from one list of `Variant = number => "NAME"`
/// lines, and derives from that same list:
///
/// * `ALL`: every variant, in list order;
/// * `name()`: the SDM (or kernel) spelling of the variant, also used by `Display`;
/// * `raw()` and `From<Enum> for $repr`: the architectural number;
/// * `TryFrom<$repr>`: the reverse mapping, failing with `$err(value)` for numbers not listed.
///
/// Keeping number and name on one line is what keeps them from drifting apart.
macro_rules! numeric_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, error = $err:path {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $sdm:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every variant, in ascending architectural order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The architectural number.
            #[must_use]
            pub const fn raw(self) -> $repr {
                self as $repr
            }

            /// The name the SDM (or the kernel) uses.
            #[must_use]
            pub const fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant => $sdm,)+
                }
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value.raw()
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = $crate::ArchError;

            fn try_from(value: $repr) -> ::core::result::Result<Self, Self::Error> {
                match value {
                    $($value => Ok(Self::$variant),)+
                    other => Err($err(other)),
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// Pins a structure's layout to the spec table, twice:
///
/// * at compile time, a `const _: () = { ... }` block asserts `size_of::<$ty>() == $size` and
///   `offset_of!($ty, field) == offset` for every listed field;
/// * at test time, a module `$test` writes all-ones into each field *through the struct*,
///   finds where those bytes land in `as_bytes()`, and checks that the listed fields tile the
///   structure exactly once (complete list, no overlap, no padding).
///
/// List every field, in declaration order, as `field @ offset`.
macro_rules! layout {
    ($ty:ty, size = $size:expr, test = $test:ident, { $($field:ident @ $off:expr),+ $(,)? }) => {
        const _: () = {
            assert!(::core::mem::size_of::<$ty>() == $size);
            $(assert!(::core::mem::offset_of!($ty, $field) == $off);)+
        };

        #[cfg(test)]
        mod $test {
            use super::*;
            use zerocopy::{FromBytes, FromZeros, IntoBytes};

            #[test]
            fn fields_land_at_spec_offsets_and_tile_the_struct() {
                let ones = [0xFF_u8; 4096];
                let mut covered = [0_u8; $size];
                $(
                    let mut value = <$ty>::new_zeroed();
                    let len = ::core::mem::size_of_val(&value.$field);
                    value.$field = FromBytes::read_from_bytes(&ones[..len]).unwrap();
                    let bytes = value.as_bytes();
                    assert_eq!(bytes.len(), $size);
                    for (i, &b) in bytes.iter().enumerate() {
                        let inside = ($off..$off + len).contains(&i);
                        assert_eq!(b, if inside { 0xFF } else { 0 },
                            "{}.{} byte {}", stringify!($ty), stringify!($field), i);
                        if inside {
                            covered[i] += 1;
                        }
                    }
                )+
                assert!(covered.iter().all(|&c| c == 1), "fields of {} do not tile it", stringify!($ty));
            }
        }
    };
}
