"""What generated SQL may call: an allowlist, per dialect, of functions that only compute on their arguments.

Everything not listed here is refused by the check, whatever it is called: functions that read files or server
state, run SQL given as text, take locks, sleep, write statistics or index entries, or tell who and where the
server is. The lists are deliberately ordinary (aggregates, window, string, math, date, conditional, JSON
access): what analytics questions need.

Two kinds of entries, because sqlglot parses a function it knows into a typed node (``exp.Count``) whatever
its spelling in the dialect, and one it does not know into ``exp.Anonymous`` with its name:

* ``SAFE_NODES``: typed sqlglot nodes, by class, shared by all dialects, plus ``DIALECT_NODES`` per dialect;
* ``SAFE_NAMES``: names of functions sqlglot keeps anonymous, lower-case, per dialect.

``TABLE_FUNCTIONS`` lists what may stand in a FROM clause; ``CAST_TYPES`` the types a value may be cast to (a
cast to a user-defined or catalogue type runs that type's input function).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.expressions.datatypes import DType

_T = DType

# The lists below are data: one entry per name, kept compact and sorted.
# fmt: off

#: Typed nodes allowed in every dialect: connectives, conditionals, aggregates, window, string, math, date, JSON.
SAFE_NODES: frozenset[type[exp.Expr]] = frozenset({
    exp.Abs, exp.Acos, exp.AddMonths, exp.And, exp.AnyValue, exp.Ascii, exp.Asin, exp.Atan, exp.Atan2,
    exp.Avg, exp.BitLength, exp.BitwiseAndAgg, exp.BitwiseOrAgg, exp.BitwiseXorAgg, exp.ByteLength, exp.Case,
    exp.Cast, exp.Cbrt, exp.Ceil, exp.Chr, exp.Coalesce, exp.Collate, exp.Concat, exp.ConcatWs, exp.Corr,
    exp.Cos, exp.Cot, exp.Count, exp.CountIf, exp.CovarPop, exp.CovarSamp, exp.CumeDist, exp.CurrentDate,
    exp.CurrentDatetime, exp.CurrentTime, exp.CurrentTimestamp, exp.Date, exp.DateAdd, exp.DateDiff,
    exp.DateStrToDate, exp.DateSub, exp.DateToDateStr, exp.DateTrunc, exp.Datetime, exp.DatetimeAdd,
    exp.DatetimeDiff, exp.DatetimeSub, exp.DatetimeTrunc, exp.Day, exp.DayOfMonth, exp.DayOfWeek,
    exp.DayOfWeekIso, exp.DayOfYear, exp.Dayname, exp.Degrees, exp.DenseRank, exp.Elt, exp.EndsWith,
    exp.Exists, exp.Exp, exp.Extract, exp.FirstValue, exp.Floor, exp.Format, exp.Greatest, exp.GroupConcat,
    exp.Grouping, exp.Hex, exp.Hour, exp.If, exp.Initcap, exp.JSONArray, exp.JSONArrayAgg, exp.JSONBContains,
    exp.JSONBExtract, exp.JSONBExtractScalar, exp.JSONBObjectAgg, exp.JSONExtract, exp.JSONExtractScalar,
    exp.JSONObject, exp.JSONObjectAgg, exp.JSONType, exp.Lag, exp.LastDay, exp.LastValue, exp.Lead, exp.Least,
    exp.Left, exp.Length, exp.Ln, exp.Localtime, exp.Localtimestamp, exp.Log, exp.LogicalAnd, exp.LogicalOr,
    exp.Lower, exp.MD5, exp.Max, exp.Median, exp.Min, exp.Minute, exp.Month, exp.Monthname, exp.MonthsBetween,
    exp.NthValue, exp.Ntile, exp.Nullif, exp.NumberToStr, exp.Or, exp.Pad, exp.ParseJSON, exp.PercentRank,
    exp.PercentileCont, exp.PercentileDisc, exp.Pi, exp.Pow, exp.Quarter, exp.Radians, exp.Rand, exp.Rank,
    exp.RegexpCount, exp.RegexpExtract, exp.RegexpILike, exp.RegexpInstr, exp.RegexpLike, exp.RegexpReplace,
    exp.RegexpSubstr, exp.Replace, exp.Reverse, exp.Right, exp.Round, exp.RowNumber, exp.Second, exp.Sign,
    exp.Sin, exp.Soundex, exp.SplitPart, exp.Sqrt, exp.StartsWith, exp.Stddev, exp.StddevPop, exp.StddevSamp,
    exp.StrPosition, exp.StrToDate, exp.StrToTime, exp.StrToUnix, exp.Substring, exp.SubstringIndex, exp.Sum,
    exp.Tan, exp.Time, exp.TimeAdd, exp.TimeDiff, exp.TimeStrToDate, exp.TimeStrToTime, exp.TimeStrToUnix,
    exp.TimeSub, exp.TimeToStr, exp.TimeToTimeStr, exp.TimeToUnix, exp.TimeTrunc, exp.Timestamp,
    exp.TimestampAdd, exp.TimestampDiff, exp.TimestampSub, exp.TimestampTrunc, exp.ToChar, exp.ToDays,
    exp.ToNumber, exp.Translate, exp.Trim, exp.Trunc, exp.TryCast, exp.TsOrDsAdd, exp.TsOrDsDiff,
    exp.TsOrDsToDate, exp.TsOrDsToDateStr, exp.TsOrDsToDatetime, exp.TsOrDsToTime, exp.TsOrDsToTimestamp,
    exp.Typeof, exp.Unicode, exp.UnixSeconds, exp.UnixToStr, exp.UnixToTime, exp.UnixToTimeStr, exp.Upper,
    exp.Variance, exp.VariancePop, exp.Week, exp.WeekOfYear, exp.WidthBucket, exp.Xor, exp.Year
})

#: Typed nodes allowed in one dialect only (arrays and set-returning functions exist in PostgreSQL alone).
DIALECT_NODES: dict[str, frozenset[type[exp.Expr]]] = {
    "sqlite": frozenset(),
    "postgres": frozenset({
        exp.Array, exp.ArrayAgg, exp.ArrayContains, exp.ArrayContainsAll, exp.ArrayOverlaps, exp.ArraySize,
        exp.ArrayToString, exp.Explode, exp.ExplodingGenerateSeries, exp.GenerateSeries, exp.JustifyDays,
        exp.JustifyHours, exp.JustifyInterval, exp.MakeInterval, exp.RegexpSplit, exp.StringToArray,
        exp.Unnest
    }),
    "mysql": frozenset({exp.MatchAgainst}),
}

_COMMON_NAMES = {
    "abs", "acos", "asin", "atan", "atan2", "avg", "ceil", "ceiling", "coalesce", "concat", "concat_ws",
    "cos", "count", "cume_dist", "degrees", "dense_rank", "exp", "first_value", "floor", "greatest", "lag",
    "last_value", "lead", "least", "length", "ln", "log", "log10", "log2", "lower", "ltrim", "max", "min",
    "mod", "nth_value", "ntile", "nullif", "percent_rank", "pi", "power", "radians", "rank", "replace",
    "round", "row_number", "rtrim", "sign", "sin", "sqrt", "substr", "substring", "sum", "tan", "trim",
    "upper"
}

#: Functions sqlglot keeps anonymous, allowed by name (lower case).
SAFE_NAMES: dict[str, frozenset[str]] = {
    "sqlite": frozenset(_COMMON_NAMES | {
        "->", "->>", "char", "date", "datetime", "format", "glob", "group_concat", "hex", "if", "ifnull",
        "iif", "instr", "json", "json_array", "json_array_length", "json_extract", "json_group_array",
        "json_group_object", "json_object", "json_quote", "json_type", "json_valid", "julianday", "like",
        "likelihood", "likely", "median", "octet_length", "percentile", "printf", "quote", "random",
        "soundex", "stddev", "strftime", "string_agg", "time", "timediff", "total", "trunc", "typeof",
        "unicode", "unixepoch", "unlikely", "variance"
    }),
    "postgres": frozenset(_COMMON_NAMES | {
        "age", "array_agg", "array_length", "array_position", "array_to_string", "ascii", "bit_and",
        "bit_length", "bit_or", "bool_and", "bool_or", "btrim", "cardinality", "cbrt", "char_length",
        "character_length", "chr", "clock_timestamp", "corr", "covar_pop", "covar_samp", "date_bin",
        "date_part", "date_trunc", "div", "every", "format", "gcd", "generate_series", "initcap", "isfinite",
        "json_agg", "json_array_elements", "json_array_elements_text", "json_array_length",
        "json_build_array", "json_build_object", "json_each", "json_each_text", "json_extract_path",
        "json_extract_path_text", "json_object_agg", "json_typeof", "jsonb_agg", "jsonb_array_elements",
        "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array", "jsonb_build_object",
        "jsonb_each", "jsonb_each_text", "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_object_agg",
        "jsonb_typeof", "justify_days", "justify_hours", "justify_interval", "lcm", "left", "lpad",
        "make_date", "make_interval", "make_time", "make_timestamp", "make_timestamptz", "md5", "mode", "now",
        "num_nonnulls", "num_nulls", "octet_length", "percentile_cont", "percentile_disc", "position",
        "random", "regexp_count", "regexp_instr", "regexp_like", "regexp_match", "regexp_matches",
        "regexp_replace", "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "regr_count",
        "regr_intercept", "regr_r2", "regr_slope", "reverse", "right", "rpad", "scale", "split_part",
        "starts_with", "statement_timestamp", "stddev", "stddev_pop", "stddev_samp", "string_agg",
        "string_to_array", "strpos", "timeofday", "to_char", "to_date", "to_hex", "to_json", "to_jsonb",
        "to_number", "to_timestamp", "transaction_timestamp", "translate", "trunc", "unnest", "var_pop",
        "var_samp", "variance", "width_bucket"
    }),
    "mysql": frozenset(_COMMON_NAMES | {
        "adddate", "addtime", "any_value", "ascii", "bin", "bit_and", "bit_length", "bit_or", "bit_xor",
        "char_length", "character_length", "conv", "cot", "crc32", "curdate", "current_date", "current_time",
        "current_timestamp", "curtime", "date", "date_add", "date_format", "date_sub", "datediff", "day",
        "dayname", "dayofmonth", "dayofweek", "dayofyear", "elt", "extract", "field", "find_in_set", "format",
        "from_days", "from_unixtime", "get_format", "group_concat", "hex", "hour", "if", "ifnull", "instr",
        "json_array", "json_arrayagg", "json_contains", "json_extract", "json_keys", "json_length",
        "json_object", "json_objectagg", "json_type", "json_unquote", "json_valid", "json_value", "last_day",
        "lcase", "left", "locate", "lpad", "makedate", "maketime", "md5", "microsecond", "mid", "minute",
        "month", "monthname", "now", "oct", "octet_length", "ord", "period_add", "period_diff", "position",
        "pow", "quarter", "rand", "regexp_instr", "regexp_like", "regexp_replace", "regexp_substr", "reverse",
        "right", "rpad", "sec_to_time", "second", "soundex", "std", "stddev", "stddev_pop", "stddev_samp",
        "str_to_date", "strcmp", "subdate", "substring_index", "subtime", "sysdate", "time", "time_format",
        "time_to_sec", "timediff", "timestamp", "timestampadd", "timestampdiff", "to_days", "to_seconds",
        "truncate", "ucase", "unix_timestamp", "utc_date", "utc_timestamp", "var_pop", "var_samp", "variance",
        "week", "weekday", "weekofyear", "year", "yearweek"
    }),
}

#: Set-returning / table-valued functions a FROM clause may call, by dialect (lower case). Typed nodes for
#: these (exp.Unnest, exp.ExplodingGenerateSeries) are in TABLE_FUNCTION_NODES.
TABLE_FUNCTIONS: dict[str, frozenset[str]] = {
    "sqlite": frozenset({"json_each", "json_tree"}),
    "postgres": frozenset({
        "generate_series", "json_array_elements", "json_array_elements_text", "json_each", "json_each_text",
        "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_each", "jsonb_each_text",
        "regexp_matches", "regexp_split_to_table", "unnest"
    }),
    "mysql": frozenset(),
}
TABLE_FUNCTION_NODES: dict[str, frozenset[type[exp.Expr]]] = {
    "sqlite": frozenset(),
    "postgres": frozenset({exp.Explode, exp.ExplodingGenerateSeries, exp.GenerateSeries, exp.Unnest}),
    "mysql": frozenset(),
}

#: Types a value may be cast to. Catalogue types (regclass, regproc, ...) and user-defined types are not here.
CAST_TYPES: frozenset[DType] = frozenset({
    _T.ARRAY, _T.BIGINT, _T.BINARY, _T.BLOB, _T.BOOLEAN, _T.CHAR, _T.DATE, _T.DATETIME, _T.DECIMAL, _T.DOUBLE,
    _T.FLOAT, _T.INT, _T.INTERVAL, _T.JSON, _T.JSONB, _T.LONGTEXT, _T.MEDIUMINT, _T.MEDIUMTEXT, _T.MONEY,
    _T.NCHAR, _T.NVARCHAR, _T.SMALLINT, _T.TEXT, _T.TIME, _T.TIMESTAMP, _T.TIMESTAMPLTZ, _T.TIMESTAMPTZ,
    _T.TIMETZ, _T.TINYINT, _T.TINYTEXT, _T.UBIGINT, _T.UDECIMAL, _T.UDOUBLE, _T.UINT, _T.UMEDIUMINT,
    _T.USMALLINT, _T.UTINYINT, _T.UUID, _T.VARBINARY, _T.VARCHAR, _T.YEAR
})

#: SQLite's own names for the typed nodes above (what the engine reports to its authorizer).
_SQLITE_TYPED_SPELLINGS: frozenset[str] = frozenset({
    "->", "->>", "abs", "acos", "asin", "atan", "atan2", "avg", "ceil", "ceiling", "char", "coalesce",
    "concat", "concat_ws", "cos", "count", "cume_dist", "date", "datetime", "degrees", "dense_rank", "exp",
    "first_value", "floor", "format", "glob", "group_concat", "hex", "if", "ifnull", "iif", "instr", "json",
    "json_array", "json_each", "json_extract", "json_group_array", "json_group_object", "json_object",
    "json_tree", "json_type", "julianday", "lag", "last_value", "lead", "length", "like", "likelihood",
    "likely", "ln", "log", "log10", "log2", "lower", "ltrim", "max", "median", "min", "mod", "nth_value",
    "ntile", "nullif", "octet_length", "percent_rank", "percentile", "pi", "pow", "power", "printf", "quote",
    "radians", "random", "rank", "regexp", "replace", "round", "row_number", "rtrim", "sign", "sin",
    "soundex", "sqrt", "stddev", "strftime", "string_agg", "substr", "substring", "sum", "tan", "time",
    "total", "trim", "trunc", "typeof", "unicode", "unixepoch", "unlikely", "upper", "variance"
})

# fmt: on

#: Keywords PostgreSQL reads as a call of a server function when they stand unquoted where a column could be
#: ("SELECT user FROM t" returns the login, not a column named user).
PG_KEYWORD_FUNCTIONS: frozenset[str] = frozenset(
    {
        "user",
        "current_user",
        "session_user",
        "current_role",
        "current_catalog",
        "current_schema",
        "system_user",
    }
)


def allowed_node(node: exp.Func, dialect: str) -> bool:
    """True when a typed (non-anonymous) function node may run in the dialect."""
    cls = type(node)
    return cls in SAFE_NODES or cls in DIALECT_NODES.get(dialect, frozenset())


def allowed_name(name: str, dialect: str) -> bool:
    return name.lower() in SAFE_NAMES.get(dialect, frozenset())


def allowed_table_function(node: exp.Expr, dialect: str) -> bool:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower() in TABLE_FUNCTIONS.get(dialect, frozenset())
    return type(node) in TABLE_FUNCTION_NODES.get(dialect, frozenset())


def sqlite_function_names() -> frozenset[str]:
    """Every function name SQLite itself may call for an allowed query (for its authorizer): the named list
    and the SQLite spellings of the typed nodes."""
    return SAFE_NAMES["sqlite"] | _SQLITE_TYPED_SPELLINGS
