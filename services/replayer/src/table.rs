//! Apache Iceberg sink for replay differences.
//!
//! Every difference found while replaying captured traffic against a candidate
//! deployment (and every exchange that could not be compared at all) becomes one
//! [`DiffRow`] in an Iceberg table kept on local disk: a SQLite SQL catalog
//! (`<dir>/catalog.db`, catalog name `timecard`) and a warehouse directory
//! (`<dir>/warehouse`). The table is partitioned by `day(captured_at)` and
//! `identity(endpoint)`; each [`DiffTable::append`] is one snapshot with one data
//! file per partition. The metadata is standard Iceberg v2, so other engines
//! (pyiceberg, Spark, Trino) can read the same table through the same catalog.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, PrimitiveArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{
    DataFile, DataFileFormat, Datum, Literal, NestedField, PartitionKey, PrimitiveType, Schema,
    SchemaRef, Struct, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::transform::{BoxedTransformFunction, create_transform_function};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle,
    SqlCatalog, SqlCatalogBuilder,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Name of the catalog (the `catalog_name` column of the SQL catalog tables).
const CATALOG_NAME: &str = "timecard";
/// Partition field name of `day(captured_at)`.
const DAY_PARTITION: &str = "captured_day";
/// Partition field name of `identity(endpoint)`.
const ENDPOINT_PARTITION: &str = "endpoint_part";
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One row of the diff table (one difference, or one exchange that could not be compared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRow {
    /// Identifier of the replay run that produced the row.
    pub run_id: String,
    /// Capture sequence number of the exchange.
    pub seq: i64,
    /// Identifier of the captured exchange, when known.
    pub exchange_id: Option<String>,
    /// When production received the request, in microseconds since the Unix epoch.
    pub captured_at_us: i64,
    /// Route template, e.g. `/v1/counters/{ns}/{counter}`.
    pub endpoint: String,
    /// HTTP method of the request.
    pub method: Option<String>,
    /// Concrete request path.
    pub path: Option<String>,
    /// What happened: `mismatch`, `candidate_timeout`, `candidate_error`,
    /// `candidate_garbage`, `corrupt_record` or `schema_drift`.
    pub outcome: String,
    /// Location of the difference inside the response (e.g. a JSON pointer).
    pub diff_path: Option<String>,
    /// Kind of difference (value changed, field missing, ...).
    pub diff_kind: Option<String>,
    /// The value production answered.
    pub original: Option<String>,
    /// The value the candidate answered.
    pub candidate: Option<String>,
    /// HTTP status production answered.
    pub original_status: Option<i32>,
    /// HTTP status the candidate answered.
    pub candidate_status: Option<i32>,
    /// Lineage (build / version) of the production answer.
    pub original_lineage: Option<String>,
    /// Lineage (build / version) of the candidate answer.
    pub candidate_lineage: Option<String>,
    /// Free-form detail (error text, reason the exchange could not be compared).
    pub detail: Option<String>,
}

/// Errors of the diff table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The directory of the catalog/warehouse could not be created or resolved.
    #[error("cannot prepare directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The directory path is not valid UTF-8 (catalog URIs must be text).
    #[error("directory path {} is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },
    /// A namespace or table name is unusable.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "namespace" or "table".
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A catalog operation failed.
    #[error("catalog {uri}: {op} failed: {source}")]
    Catalog {
        /// The catalog URI.
        uri: String,
        /// What was attempted.
        op: String,
        /// The error reported by iceberg.
        #[source]
        source: Box<iceberg::Error>,
    },
    /// Reading, writing or committing the table failed.
    #[error("table {table}: {op} failed: {source}")]
    Iceberg {
        /// The table identifier (`namespace.table`).
        table: String,
        /// What was attempted.
        op: String,
        /// The error reported by iceberg.
        #[source]
        source: Box<iceberg::Error>,
    },
    /// The existing table lacks one of the diff columns.
    #[error("table {table} (catalog {uri}) has no column `{column}`, which the diff schema needs")]
    MissingColumn {
        /// The table identifier.
        table: String,
        /// The catalog URI.
        uri: String,
        /// The missing column.
        column: String,
    },
    /// The existing table has a diff column of an unusable type or nullability.
    #[error("table {table} (catalog {uri}): column `{column}` is {found}, expected {expected}")]
    IncompatibleColumn {
        /// The table identifier.
        table: String,
        /// The catalog URI.
        uri: String,
        /// The column.
        column: String,
        /// What the diff schema needs.
        expected: String,
        /// What the table has.
        found: String,
    },
    /// The existing table has a required column this module cannot fill.
    #[error(
        "table {table} (catalog {uri}) has a required column `{column}` unknown to the diff schema"
    )]
    UnknownRequiredColumn {
        /// The table identifier.
        table: String,
        /// The catalog URI.
        uri: String,
        /// The column.
        column: String,
    },
    /// Building an Arrow record batch failed.
    #[error("table {table}: building the record batch failed: {source}")]
    Arrow {
        /// The table identifier.
        table: String,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The data read back does not have the expected shape.
    #[error("table {table}: unexpected data: {detail}")]
    BadData {
        /// The table identifier.
        table: String,
        /// What is wrong.
        detail: String,
    },
}

/// Value kind of a diff column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Str,
    Long,
    Int,
    Timestamp,
}

impl Kind {
    fn primitive(self) -> PrimitiveType {
        match self {
            Kind::Str => PrimitiveType::String,
            Kind::Long => PrimitiveType::Long,
            Kind::Int => PrimitiveType::Int,
            Kind::Timestamp => PrimitiveType::Timestamp,
        }
    }
}

/// The diff columns, in field-id order (ids start at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    RunId,
    Seq,
    ExchangeId,
    CapturedAt,
    Endpoint,
    Method,
    Path,
    Outcome,
    DiffPath,
    DiffKind,
    Original,
    Candidate,
    OriginalStatus,
    CandidateStatus,
    OriginalLineage,
    CandidateLineage,
    Detail,
}

/// Column definition: name, kind, required.
struct ColumnDef {
    col: Col,
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn def(col: Col, name: &'static str, kind: Kind, required: bool) -> ColumnDef {
    ColumnDef {
        col,
        name,
        kind,
        required,
    }
}

const COLUMNS: [ColumnDef; 17] = [
    def(Col::RunId, "run_id", Kind::Str, true),
    def(Col::Seq, "seq", Kind::Long, true),
    def(Col::ExchangeId, "exchange_id", Kind::Str, false),
    def(Col::CapturedAt, "captured_at", Kind::Timestamp, true),
    def(Col::Endpoint, "endpoint", Kind::Str, true),
    def(Col::Method, "method", Kind::Str, false),
    def(Col::Path, "path", Kind::Str, false),
    def(Col::Outcome, "outcome", Kind::Str, true),
    def(Col::DiffPath, "diff_path", Kind::Str, false),
    def(Col::DiffKind, "diff_kind", Kind::Str, false),
    def(Col::Original, "original", Kind::Str, false),
    def(Col::Candidate, "candidate", Kind::Str, false),
    def(Col::OriginalStatus, "original_status", Kind::Int, false),
    def(Col::CandidateStatus, "candidate_status", Kind::Int, false),
    def(Col::OriginalLineage, "original_lineage", Kind::Str, false),
    def(Col::CandidateLineage, "candidate_lineage", Kind::Str, false),
    def(Col::Detail, "detail", Kind::Str, false),
];

fn column_by_name(name: &str) -> Option<&'static ColumnDef> {
    COLUMNS.iter().find(|c| c.name == name)
}

/// A string column value of a row.
fn str_value(row: &DiffRow, col: Col) -> Option<&str> {
    match col {
        Col::RunId => Some(&row.run_id),
        Col::ExchangeId => row.exchange_id.as_deref(),
        Col::Endpoint => Some(&row.endpoint),
        Col::Method => row.method.as_deref(),
        Col::Path => row.path.as_deref(),
        Col::Outcome => Some(&row.outcome),
        Col::DiffPath => row.diff_path.as_deref(),
        Col::DiffKind => row.diff_kind.as_deref(),
        Col::Original => row.original.as_deref(),
        Col::Candidate => row.candidate.as_deref(),
        Col::OriginalLineage => row.original_lineage.as_deref(),
        Col::CandidateLineage => row.candidate_lineage.as_deref(),
        Col::Detail => row.detail.as_deref(),
        Col::Seq | Col::CapturedAt | Col::OriginalStatus | Col::CandidateStatus => None,
    }
}

/// A 64-bit column value of a row (`seq`, `captured_at`).
fn long_value(row: &DiffRow, col: Col) -> Option<i64> {
    match col {
        Col::Seq => Some(row.seq),
        Col::CapturedAt => Some(row.captured_at_us),
        _ => None,
    }
}

/// A 32-bit column value of a row (the statuses).
fn int_value(row: &DiffRow, col: Col) -> Option<i32> {
    match col {
        Col::OriginalStatus => row.original_status,
        Col::CandidateStatus => row.candidate_status,
        _ => None,
    }
}

/// The value of a column of a row as an Iceberg datum (`None` for null).
fn datum_value(row: &DiffRow, column: &ColumnDef) -> Option<Datum> {
    match column.kind {
        Kind::Str => str_value(row, column.col).map(Datum::string),
        Kind::Long => long_value(row, column.col).map(Datum::long),
        Kind::Int => int_value(row, column.col).map(Datum::int),
        Kind::Timestamp => long_value(row, column.col).map(Datum::timestamp_micros),
    }
}

/// The Iceberg schema of a new diff table.
fn diff_schema() -> Result<Schema, iceberg::Error> {
    let fields = COLUMNS
        .iter()
        .zip(1..)
        .map(|(c, id)| {
            let ty = Type::Primitive(c.kind.primitive());
            let field = if c.required {
                NestedField::required(id, c.name, ty)
            } else {
                NestedField::optional(id, c.name, ty)
            };
            Arc::new(field)
        })
        .collect::<Vec<_>>();
    Schema::builder().with_fields(fields).build()
}

/// The partition spec of a new diff table: `day(captured_at)`, `identity(endpoint)`.
fn diff_partition_spec() -> Result<UnboundPartitionSpec, iceberg::Error> {
    let id_of = |name: &str| {
        COLUMNS
            .iter()
            .zip(1..)
            .find(|(c, _)| c.name == name)
            .map(|(_, id)| id)
            .unwrap_or_default()
    };
    Ok(UnboundPartitionSpec::builder()
        .add_partition_field(id_of("captured_at"), DAY_PARTITION, Transform::Day)?
        .add_partition_field(id_of("endpoint"), ENDPOINT_PARTITION, Transform::Identity)?
        .build())
}

/// Percent-encodes a path for a sqlx SQLite URI (sqlx percent-decodes the path).
fn encode_uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a partition name or value for a directory name, like pyiceberg's
/// `quote_plus(value, safe="")` (and Java's `URLEncoder`): `/` and other
/// specials become `%XX`, a space becomes `+`.
fn encode_partition_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_name(what: &'static str, name: &str) -> Result<(), TableError> {
    let reason = if name.trim().is_empty() {
        Some("it is empty")
    } else if name.contains('.') {
        Some("it contains '.', which separates namespace and table in identifiers")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TableError::InvalidName {
            what,
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The Iceberg diff table, with the catalog it lives in.
pub struct DiffTable {
    catalog: SqlCatalog,
    uri: String,
    ident: TableIdent,
    table: Table,
}

impl std::fmt::Debug for DiffTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffTable")
            .field("uri", &self.uri)
            .field("table", &self.identifier())
            .finish_non_exhaustive()
    }
}

impl DiffTable {
    /// Opens (creating if missing) the catalog `<dir>/catalog.db` (catalog name "timecard"),
    /// warehouse `<dir>/warehouse`, namespace `namespace`, table `table`.
    pub async fn open(dir: &Path, namespace: &str, table: &str) -> Result<Self, TableError> {
        check_name("namespace", namespace)?;
        check_name("table", table)?;

        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| TableError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        let dir = tokio::fs::canonicalize(dir)
            .await
            .map_err(|source| TableError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        let warehouse = dir.join("warehouse");
        tokio::fs::create_dir_all(&warehouse)
            .await
            .map_err(|source| TableError::Dir {
                path: warehouse.clone(),
                source,
            })?;
        let dir_str = dir.to_str().ok_or_else(|| TableError::NonUtf8Path {
            path: dir.to_path_buf(),
        })?;
        let dir_str = dir_str.trim_end_matches('/');

        let uri = format!("sqlite:{}/catalog.db?mode=rwc", encode_uri_path(dir_str));
        let warehouse_uri = format!("file://{dir_str}/warehouse");
        let catalog_err = |op: &str| {
            let uri = uri.clone();
            let op = op.to_string();
            move |source| TableError::Catalog {
                uri,
                op,
                source: Box::new(source),
            }
        };

        let props = HashMap::from([
            (SQL_CATALOG_PROP_URI.to_string(), uri.clone()),
            (SQL_CATALOG_PROP_WAREHOUSE.to_string(), warehouse_uri),
            (
                SQL_CATALOG_PROP_BIND_STYLE.to_string(),
                SqlBindStyle::DollarNumeric.to_string(),
            ),
        ]);
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(CATALOG_NAME, props)
            .await
            .map_err(catalog_err("opening the catalog"))?;

        let ns = NamespaceIdent::new(namespace.to_string());
        let ident = TableIdent::new(ns.clone(), table.to_string());

        let ns_exists = catalog
            .namespace_exists(&ns)
            .await
            .map_err(catalog_err(&format!("checking namespace {namespace}")))?;
        if !ns_exists
            && let Err(e) = catalog.create_namespace(&ns, HashMap::new()).await
            // Another process may have created it meanwhile.
            && !catalog.namespace_exists(&ns).await.unwrap_or(false)
        {
            return Err(catalog_err(&format!("creating namespace {namespace}"))(e));
        }

        let full_name = format!("{namespace}.{table}");
        let table_exists = catalog
            .table_exists(&ident)
            .await
            .map_err(catalog_err(&format!("checking table {full_name}")))?;
        let loaded = if table_exists {
            catalog
                .load_table(&ident)
                .await
                .map_err(catalog_err(&format!("loading table {full_name}")))?
        } else {
            let schema = diff_schema().map_err(catalog_err("building the diff schema"))?;
            let spec = diff_partition_spec().map_err(catalog_err("building the partition spec"))?;
            let creation = TableCreation::builder()
                .name(table.to_string())
                .schema(schema)
                .partition_spec(spec)
                .build();
            match catalog.create_table(&ns, creation).await {
                Ok(t) => {
                    tracing::info!(table = %full_name, catalog = %uri, "created diff table");
                    t
                }
                Err(e) if e.kind() == ErrorKind::TableAlreadyExists => catalog
                    .load_table(&ident)
                    .await
                    .map_err(catalog_err(&format!("loading table {full_name}")))?,
                Err(e) => return Err(catalog_err(&format!("creating table {full_name}"))(e)),
            }
        };

        let this = DiffTable {
            catalog,
            uri,
            ident,
            table: loaded,
        };
        this.check_schema(this.table.metadata().current_schema())?;
        Ok(this)
    }

    /// Appends rows in ONE commit (snapshot): rows grouped by partition (day of captured_at,
    /// endpoint), one data file per partition. Empty slice: no commit, Ok(0). Returns the
    /// number of data files written.
    pub async fn append(&mut self, rows: &[DiffRow]) -> Result<usize, TableError> {
        if rows.is_empty() {
            return Ok(0);
        }
        // Pick up commits made by others since we last looked.
        let table = self.reload().await?;
        let schema = table.metadata().current_schema().clone();
        self.check_schema(&schema)?;

        let groups = self.group_by_partition(&table, &schema, rows)?;
        let arrow_schema = Arc::new(
            schema_to_arrow_schema(&schema).map_err(self.iceberg_err("converting the schema"))?,
        );
        let data_location = data_location(&table);
        let prefix = unique_prefix();

        let mut files: Vec<DataFile> = Vec::new();
        let mut write_result = Ok(());
        for (index, group) in groups.into_iter().enumerate() {
            let batch = match self.build_batch(&arrow_schema, &group.rows) {
                Ok(b) => b,
                Err(e) => {
                    write_result = Err(e);
                    break;
                }
            };
            let location = PartitionLocation {
                dir: match &group.dir {
                    Some(d) => format!("{data_location}/{d}"),
                    None => data_location.clone(),
                },
            };
            match self
                .write_file(&table, &schema, location, &prefix, index, group.key, batch)
                .await
            {
                Ok(mut written) => files.append(&mut written),
                Err(e) => {
                    write_result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = write_result {
            self.discard(&table, &files).await;
            return Err(e);
        }

        let count = files.len();
        let tx = Transaction::new(&table);
        let committed = match tx
            .fast_append()
            .add_data_files(files.clone())
            .apply(tx)
            .map_err(self.iceberg_err("preparing the append"))
        {
            Ok(tx) => tx
                .commit(&self.catalog)
                .await
                .map_err(self.iceberg_err("committing the append")),
            Err(e) => Err(e),
        };
        match committed {
            Ok(t) => {
                tracing::debug!(table = %self.identifier(), rows = rows.len(), files = count, "appended diff rows");
                self.table = t;
                Ok(count)
            }
            Err(e) => {
                self.discard(&table, &files).await;
                Err(e)
            }
        }
    }

    /// Every row of the current snapshot (order unspecified). Empty table: empty Vec.
    pub async fn read_all(&self) -> Result<Vec<DiffRow>, TableError> {
        let table = self.reload().await?;
        self.check_schema(table.metadata().current_schema())?;
        let columns = COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>();
        let scan = table
            .scan()
            .select(columns)
            .build()
            .map_err(self.iceberg_err("planning the scan"))?;
        let batches: Vec<RecordBatch> = scan
            .to_arrow()
            .await
            .map_err(self.iceberg_err("starting the scan"))?
            .try_collect()
            .await
            .map_err(self.iceberg_err("reading data files"))?;
        let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
        for batch in &batches {
            self.decode_batch(batch, &mut rows)?;
        }
        Ok(rows)
    }

    /// The catalog URI (sqlite:…), for reports.
    pub fn catalog_uri(&self) -> &str {
        &self.uri
    }

    /// The table identifier "namespace.table", for reports.
    pub fn identifier(&self) -> String {
        format!("{}.{}", self.ident.namespace().join("."), self.ident.name())
    }

    fn iceberg_err(&self, op: &str) -> impl FnOnce(iceberg::Error) -> TableError + use<> {
        let table = self.identifier();
        let op = op.to_string();
        move |source| TableError::Iceberg {
            table,
            op,
            source: Box::new(source),
        }
    }

    fn bad_data(&self, detail: String) -> TableError {
        TableError::BadData {
            table: self.identifier(),
            detail,
        }
    }

    async fn reload(&self) -> Result<Table, TableError> {
        self.catalog
            .load_table(&self.ident)
            .await
            .map_err(|source| TableError::Catalog {
                uri: self.uri.clone(),
                op: format!("loading table {}", self.identifier()),
                source: Box::new(source),
            })
    }

    /// Checks that `schema` has every diff column with a usable type, and no required
    /// column we could not fill.
    fn check_schema(&self, schema: &Schema) -> Result<(), TableError> {
        for c in &COLUMNS {
            let Some(field) = schema.field_by_name(c.name) else {
                return Err(TableError::MissingColumn {
                    table: self.identifier(),
                    uri: self.uri.clone(),
                    column: c.name.to_string(),
                });
            };
            let expected = Type::Primitive(c.kind.primitive());
            if *field.field_type != expected {
                return Err(TableError::IncompatibleColumn {
                    table: self.identifier(),
                    uri: self.uri.clone(),
                    column: c.name.to_string(),
                    expected: expected.to_string(),
                    found: field.field_type.to_string(),
                });
            }
            // A required table column cannot take our nulls. (A table column that is
            // optional where we require a value is fine for writing; nulls written by
            // others are reported when reading.)
            if field.required && !c.required {
                return Err(TableError::IncompatibleColumn {
                    table: self.identifier(),
                    uri: self.uri.clone(),
                    column: c.name.to_string(),
                    expected: format!("optional {expected}"),
                    found: format!("required {}", field.field_type),
                });
            }
        }
        for field in schema.as_struct().fields() {
            if field.required && column_by_name(&field.name).is_none() {
                return Err(TableError::UnknownRequiredColumn {
                    table: self.identifier(),
                    uri: self.uri.clone(),
                    column: field.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Groups rows by their partition under the table's default spec.
    fn group_by_partition<'r>(
        &self,
        table: &Table,
        schema: &SchemaRef,
        rows: &'r [DiffRow],
    ) -> Result<Vec<PartitionGroup<'r>>, TableError> {
        let spec = table.metadata().default_partition_spec().as_ref().clone();
        if spec.fields().is_empty() {
            return Ok(vec![PartitionGroup {
                key: None,
                dir: None,
                rows: rows.iter().collect(),
            }]);
        }

        let mut sources = Vec::with_capacity(spec.fields().len());
        for field in spec.fields() {
            let column = schema
                .field_by_id(field.source_id)
                .and_then(|f| column_by_name(&f.name));
            let function = match field.transform {
                Transform::Identity | Transform::Void => None,
                Transform::Day if column.is_some_and(|c| c.kind == Kind::Timestamp) => None,
                other => Some(
                    create_transform_function(&other)
                        .map_err(self.iceberg_err("preparing a partition transform"))?,
                ),
            };
            sources.push(PartitionSource {
                name: encode_partition_component(&field.name),
                transform: field.transform,
                column,
                function,
            });
        }

        let mut index: HashMap<Struct, usize> = HashMap::new();
        let mut groups: Vec<PartitionGroup<'r>> = Vec::new();
        for row in rows {
            let mut values = Vec::with_capacity(sources.len());
            let mut dir_parts = Vec::with_capacity(sources.len());
            for source in &sources {
                let value = self.partition_value(source, row)?;
                let human = value
                    .as_ref()
                    .map_or_else(|| "null".to_string(), Datum::to_human_string);
                dir_parts.push(format!(
                    "{}={}",
                    source.name,
                    encode_partition_component(&human)
                ));
                values.push(value.map(|d| Literal::Primitive(d.literal().clone())));
            }
            let data = Struct::from_iter(values);
            let slot = match index.get(&data) {
                Some(&slot) => slot,
                None => {
                    let slot = groups.len();
                    index.insert(data.clone(), slot);
                    groups.push(PartitionGroup {
                        key: Some(PartitionKey::new(spec.clone(), schema.clone(), data)),
                        dir: Some(dir_parts.join("/")),
                        rows: Vec::new(),
                    });
                    slot
                }
            };
            if let Some(group) = groups.get_mut(slot) {
                group.rows.push(row);
            }
        }
        Ok(groups)
    }

    /// The partition value of one partition field for one row.
    fn partition_value(
        &self,
        source: &PartitionSource,
        row: &DiffRow,
    ) -> Result<Option<Datum>, TableError> {
        let Some(column) = source.column else {
            // A column unknown to us: we always write null there.
            return Ok(None);
        };
        let Some(value) = datum_value(row, column) else {
            return Ok(None);
        };
        match (&source.transform, &source.function) {
            (Transform::Void, _) => Ok(None),
            (Transform::Identity, _) => Ok(Some(value)),
            (Transform::Day, None) => {
                // Floor division: 1969-12-31T23:59:59 is day -1, not day 0.
                let micros = long_value(row, column.col).unwrap_or_default();
                let days = i32::try_from(micros.div_euclid(MICROS_PER_DAY)).map_err(|_| {
                    self.bad_data(format!("captured_at {micros} µs is out of the date range"))
                })?;
                Ok(Some(Datum::date(days)))
            }
            (_, Some(function)) => function
                .transform_literal(&value)
                .map_err(self.iceberg_err("computing a partition value")),
            (other, None) => Err(self.bad_data(format!(
                "partition transform {other} is not supported for column `{}`",
                column.name
            ))),
        }
    }

    /// Builds the record batch of `rows` against the table's Arrow schema.
    fn build_batch(
        &self,
        arrow_schema: &arrow_schema::SchemaRef,
        rows: &[&DiffRow],
    ) -> Result<RecordBatch, TableError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(arrow_schema.fields().len());
        for field in arrow_schema.fields() {
            let array: ArrayRef = match column_by_name(field.name()) {
                None => new_null_array(field.data_type(), rows.len()),
                Some(c) => match c.kind {
                    Kind::Str => Arc::new(
                        rows.iter()
                            .map(|r| str_value(r, c.col))
                            .collect::<StringArray>(),
                    ),
                    Kind::Long => Arc::new(
                        rows.iter()
                            .map(|r| long_value(r, c.col))
                            .collect::<Int64Array>(),
                    ),
                    Kind::Int => Arc::new(
                        rows.iter()
                            .map(|r| int_value(r, c.col))
                            .collect::<Int32Array>(),
                    ),
                    Kind::Timestamp => Arc::new(
                        rows.iter()
                            .map(|r| long_value(r, c.col))
                            .collect::<TimestampMicrosecondArray>(),
                    ),
                },
            };
            arrays.push(array);
        }
        RecordBatch::try_new(arrow_schema.clone(), arrays).map_err(|source| TableError::Arrow {
            table: self.identifier(),
            source,
        })
    }

    /// Writes one partition's batch as data file(s).
    #[allow(clippy::too_many_arguments)]
    async fn write_file(
        &self,
        table: &Table,
        schema: &SchemaRef,
        location: PartitionLocation,
        prefix: &str,
        index: usize,
        key: Option<PartitionKey>,
        batch: RecordBatch,
    ) -> Result<Vec<DataFile>, TableError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let parquet = ParquetWriterBuilder::new(props, schema.clone());
        let names = DefaultFileNameGenerator::new(
            format!("{prefix}-{index:05}"),
            None,
            DataFileFormat::Parquet,
        );
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            parquet,
            table.file_io().clone(),
            location,
            names,
        );
        let mut writer = DataFileWriterBuilder::new(rolling)
            .build(key)
            .await
            .map_err(self.iceberg_err("opening a data file writer"))?;
        writer
            .write(batch)
            .await
            .map_err(self.iceberg_err("writing a data file"))?;
        writer
            .close()
            .await
            .map_err(self.iceberg_err("closing a data file"))
    }

    /// Best-effort removal of data files that will not be committed.
    async fn discard(&self, table: &Table, files: &[DataFile]) {
        for file in files {
            if let Err(e) = table.file_io().delete(file.file_path()).await {
                tracing::warn!(file = file.file_path(), error = %e, "could not remove uncommitted data file");
            }
        }
    }

    /// Decodes one scanned batch into rows.
    fn decode_batch(&self, batch: &RecordBatch, out: &mut Vec<DiffRow>) -> Result<(), TableError> {
        let mut cols = Vec::with_capacity(COLUMNS.len());
        for c in &COLUMNS {
            let array = batch
                .column_by_name(c.name)
                .ok_or_else(|| self.bad_data(format!("scan returned no column `{}`", c.name)))?;
            cols.push(ColumnReader::new(c, array.as_ref()).ok_or_else(|| {
                self.bad_data(format!(
                    "column `{}` was read as {}, expected {}",
                    c.name,
                    array.data_type(),
                    c.kind.primitive()
                ))
            })?);
        }
        for i in 0..batch.num_rows() {
            let mut row = DiffRow {
                run_id: String::new(),
                seq: 0,
                exchange_id: None,
                captured_at_us: 0,
                endpoint: String::new(),
                method: None,
                path: None,
                outcome: String::new(),
                diff_path: None,
                diff_kind: None,
                original: None,
                candidate: None,
                original_status: None,
                candidate_status: None,
                original_lineage: None,
                candidate_lineage: None,
                detail: None,
            };
            for (c, reader) in COLUMNS.iter().zip(&cols) {
                let value = reader.get(i);
                if c.required && value.is_null() {
                    return Err(self.bad_data(format!("null in required column `{}`", c.name)));
                }
                value.store(c.col, &mut row);
            }
            out.push(row);
        }
        Ok(())
    }
}

/// Rows of one partition.
struct PartitionGroup<'r> {
    key: Option<PartitionKey>,
    /// Relative directory (`name=value/...`), `None` when unpartitioned.
    dir: Option<String>,
    rows: Vec<&'r DiffRow>,
}

/// How one partition field is computed from a row.
struct PartitionSource {
    /// Encoded partition field name (for the directory).
    name: String,
    transform: Transform,
    /// The diff column the field is derived from (`None`: a column we always leave null).
    column: Option<&'static ColumnDef>,
    /// Iceberg's transform function, for transforms we do not compute ourselves.
    function: Option<BoxedTransformFunction>,
}

/// Location generator that puts every file into one precomputed partition directory.
#[derive(Clone, Debug)]
struct PartitionLocation {
    dir: String,
}

impl LocationGenerator for PartitionLocation {
    fn generate_location(&self, _partition_key: Option<&PartitionKey>, file_name: &str) -> String {
        format!("{}/{}", self.dir, file_name)
    }
}

/// Where the table's data files go (honours `write.data.path`, like iceberg's default).
fn data_location(table: &Table) -> String {
    let props = table.metadata().properties();
    match props
        .get("write.data.path")
        .or_else(|| props.get("write.folder-storage.path"))
    {
        Some(location) => location.trim_end_matches('/').to_string(),
        None => format!("{}/data", table.metadata().location().trim_end_matches('/')),
    }
}

/// A file-name prefix unique to this append (time, process, counter).
fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("diff-{nanos:x}-{:x}-{n}", std::process::id())
}

/// Typed access to one scanned column.
enum ColumnReader<'a> {
    Utf8(&'a arrow_array::GenericStringArray<i32>),
    LargeUtf8(&'a arrow_array::GenericStringArray<i64>),
    Utf8View(&'a arrow_array::StringViewArray),
    Long(&'a PrimitiveArray<Int64Type>),
    Int(&'a PrimitiveArray<Int32Type>),
    Timestamp(&'a PrimitiveArray<TimestampMicrosecondType>),
}

/// One decoded cell.
enum Cell<'a> {
    Str(Option<&'a str>),
    Long(Option<i64>),
    Int(Option<i32>),
}

impl Cell<'_> {
    fn is_null(&self) -> bool {
        matches!(self, Cell::Str(None) | Cell::Long(None) | Cell::Int(None))
    }

    fn store(self, col: Col, row: &mut DiffRow) {
        match self {
            Cell::Str(v) => {
                let v = v.map(str::to_string);
                match col {
                    Col::RunId => row.run_id = v.unwrap_or_default(),
                    Col::Endpoint => row.endpoint = v.unwrap_or_default(),
                    Col::Outcome => row.outcome = v.unwrap_or_default(),
                    Col::ExchangeId => row.exchange_id = v,
                    Col::Method => row.method = v,
                    Col::Path => row.path = v,
                    Col::DiffPath => row.diff_path = v,
                    Col::DiffKind => row.diff_kind = v,
                    Col::Original => row.original = v,
                    Col::Candidate => row.candidate = v,
                    Col::OriginalLineage => row.original_lineage = v,
                    Col::CandidateLineage => row.candidate_lineage = v,
                    Col::Detail => row.detail = v,
                    Col::Seq | Col::CapturedAt | Col::OriginalStatus | Col::CandidateStatus => {}
                }
            }
            Cell::Long(v) => match col {
                Col::Seq => row.seq = v.unwrap_or_default(),
                Col::CapturedAt => row.captured_at_us = v.unwrap_or_default(),
                _ => {}
            },
            Cell::Int(v) => match col {
                Col::OriginalStatus => row.original_status = v,
                Col::CandidateStatus => row.candidate_status = v,
                _ => {}
            },
        }
    }
}

impl<'a> ColumnReader<'a> {
    fn new(column: &ColumnDef, array: &'a dyn Array) -> Option<Self> {
        match column.kind {
            Kind::Str => array
                .as_string_opt::<i32>()
                .map(ColumnReader::Utf8)
                .or_else(|| array.as_string_opt::<i64>().map(ColumnReader::LargeUtf8))
                .or_else(|| array.as_string_view_opt().map(ColumnReader::Utf8View)),
            Kind::Long => array
                .as_primitive_opt::<Int64Type>()
                .map(ColumnReader::Long),
            Kind::Int => array.as_primitive_opt::<Int32Type>().map(ColumnReader::Int),
            Kind::Timestamp => array
                .as_primitive_opt::<TimestampMicrosecondType>()
                .map(ColumnReader::Timestamp),
        }
    }

    fn get(&self, i: usize) -> Cell<'a> {
        fn opt<T>(valid: bool, v: impl FnOnce() -> T) -> Option<T> {
            valid.then(v)
        }
        match self {
            ColumnReader::Utf8(a) => Cell::Str(opt(a.is_valid(i), || a.value(i))),
            ColumnReader::LargeUtf8(a) => Cell::Str(opt(a.is_valid(i), || a.value(i))),
            ColumnReader::Utf8View(a) => Cell::Str(opt(a.is_valid(i), || a.value(i))),
            ColumnReader::Long(a) => Cell::Long(opt(a.is_valid(i), || a.value(i))),
            ColumnReader::Int(a) => Cell::Int(opt(a.is_valid(i), || a.value(i))),
            ColumnReader::Timestamp(a) => Cell::Long(opt(a.is_valid(i), || a.value(i))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const DAY1: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z
    const EP_A: &str = "/v1/counters/{ns}/{counter}";
    const EP_B: &str = "/v1/notify";

    fn row(seq: i64, at: i64, endpoint: &str) -> DiffRow {
        DiffRow {
            run_id: "run-1".to_string(),
            seq,
            exchange_id: Some(format!("ex-{seq}")),
            captured_at_us: at,
            endpoint: endpoint.to_string(),
            method: Some("GET".to_string()),
            path: Some(format!("/v1/counters/a/b{seq}")),
            outcome: "mismatch".to_string(),
            diff_path: Some("/value".to_string()),
            diff_kind: Some("changed".to_string()),
            original: Some("\"42\"".to_string()),
            candidate: Some("\"43\"".to_string()),
            original_status: Some(200),
            candidate_status: Some(200),
            original_lineage: Some("v1.2.3".to_string()),
            candidate_lineage: Some("v1.3.0".to_string()),
            detail: None,
        }
    }

    fn sample_rows() -> Vec<DiffRow> {
        let mut rows = vec![
            row(1, DAY1 + 5, EP_A),
            row(2, DAY1 + 3_600_000_000, EP_A),
            row(3, DAY1 + 10, EP_B),
            row(4, DAY1 + MICROS_PER_DAY + 7, EP_A),
            row(5, DAY1 + MICROS_PER_DAY + 8, EP_B),
        ];
        // Nones everywhere optional.
        rows[1] = DiffRow {
            exchange_id: None,
            method: None,
            path: None,
            outcome: "candidate_timeout".to_string(),
            diff_path: None,
            diff_kind: None,
            original: None,
            candidate: None,
            original_status: None,
            candidate_status: None,
            original_lineage: None,
            candidate_lineage: None,
            detail: Some("timed out after 2s".to_string()),
            ..rows[1].clone()
        };
        // Quotes, backslashes, newlines and unicode.
        rows[2].original =
            Some(r#"{"name":"Zoë \"the\" ünïcødé","emoji":"🦀","path":"a\\b"}"#.to_string());
        rows[2].candidate = Some("line1\nline2\t'single' \"double\" — 日本語".to_string());
        rows
    }

    fn sorted(mut rows: Vec<DiffRow>) -> Vec<DiffRow> {
        rows.sort_by(|a, b| (a.seq, &a.run_id).cmp(&(b.seq, &b.run_id)));
        rows
    }

    fn partitions(rows: &[DiffRow]) -> BTreeSet<(i64, String)> {
        rows.iter()
            .map(|r| {
                (
                    r.captured_at_us.div_euclid(MICROS_PER_DAY),
                    r.endpoint.clone(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn append_and_read_back_across_partitions_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample_rows();

        let mut table = DiffTable::open(dir.path(), "replay", "diffs")
            .await
            .unwrap();
        assert_eq!(table.identifier(), "replay.diffs");
        assert!(table.catalog_uri().starts_with("sqlite:"));
        assert!(table.catalog_uri().contains("catalog.db"));
        assert!(table.read_all().await.unwrap().is_empty());
        assert_eq!(table.append(&[]).await.unwrap(), 0);

        let files = table.append(&rows).await.unwrap();
        assert_eq!(files, partitions(&rows).len());
        assert_eq!(files, 4);
        assert_eq!(
            sorted(table.read_all().await.unwrap()),
            sorted(rows.clone())
        );
        drop(table);

        // Second append through a fresh open of the same directory.
        let mut more = vec![row(6, DAY1 + 99, EP_B), row(7, DAY1 - 1, EP_A)];
        more[1].run_id = "run-2".to_string();
        let mut table = DiffTable::open(dir.path(), "replay", "diffs")
            .await
            .unwrap();
        assert_eq!(table.append(&more).await.unwrap(), partitions(&more).len());
        let mut all = rows.clone();
        all.extend(more);
        assert_eq!(sorted(table.read_all().await.unwrap()), sorted(all));

        // Partition directories on disk.
        let data = dir.path().join("warehouse/replay/diffs/data");
        let names_in = |d: &Path| -> BTreeSet<String> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let days = names_in(&data);
        let expected_days: BTreeSet<String> = [
            "captured_day=2024-04-30",
            "captured_day=2024-05-01",
            "captured_day=2024-05-02",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(days, expected_days);
        let endpoints = names_in(&data.join("captured_day=2024-05-01"));
        let expected_endpoints: BTreeSet<String> = [
            "endpoint_part=%2Fv1%2Fcounters%2F%7Bns%7D%2F%7Bcounter%7D",
            "endpoint_part=%2Fv1%2Fnotify",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(endpoints, expected_endpoints);
        let parquet_files = std::fs::read_dir(
            data.join("captured_day=2024-05-01")
                .join("endpoint_part=%2Fv1%2Fnotify"),
        )
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".parquet")
        })
        .count();
        assert_eq!(parquet_files, 2, "one file per append in that partition");
    }

    #[tokio::test]
    async fn day_partition_uses_floor_division() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = DiffTable::open(dir.path(), "ns", "t").await.unwrap();
        // 1969-12-31T23:59:59.999999 and 1969-12-30T23:59:59.5
        let rows = vec![
            row(1, -1, EP_A),
            row(2, -MICROS_PER_DAY - 500_000, EP_A),
            row(3, 0, EP_A),
        ];
        assert_eq!(table.append(&rows).await.unwrap(), 3);
        let data = dir.path().join("warehouse/ns/t/data");
        for day in ["1969-12-30", "1969-12-31", "1970-01-01"] {
            assert!(
                data.join(format!("captured_day={day}")).is_dir(),
                "missing partition {day}"
            );
        }
        assert_eq!(sorted(table.read_all().await.unwrap()), sorted(rows));
    }

    #[tokio::test]
    async fn incompatible_existing_table_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // Create the catalog and namespace, then drop our table and put a foreign one in its place.
        let table = DiffTable::open(dir.path(), "replay", "diffs")
            .await
            .unwrap();
        let ident = table.ident.clone();
        table.catalog.drop_table(&ident).await.unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "run_id", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::required(2, "seq", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let creation = TableCreation::builder()
            .name("diffs".to_string())
            .schema(schema)
            .build();
        table
            .catalog
            .create_table(ident.namespace(), creation)
            .await
            .unwrap();
        drop(table);

        let err = DiffTable::open(dir.path(), "replay", "diffs")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, TableError::MissingColumn { column, .. } if column == "exchange_id"),
            "{msg}"
        );
        assert!(msg.contains("exchange_id"), "{msg}");
        assert!(msg.contains("replay.diffs"), "{msg}");

        // A column of the wrong type is named too.
        let table_ns = NamespaceIdent::new("other".to_string());
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(
                CATALOG_NAME,
                HashMap::from([
                    (
                        SQL_CATALOG_PROP_URI.to_string(),
                        err_uri(&err).unwrap().to_string(),
                    ),
                    (
                        SQL_CATALOG_PROP_WAREHOUSE.to_string(),
                        format!("file://{}/warehouse", dir.path().display()),
                    ),
                    (
                        SQL_CATALOG_PROP_BIND_STYLE.to_string(),
                        SqlBindStyle::DollarNumeric.to_string(),
                    ),
                ]),
            )
            .await
            .unwrap();
        catalog
            .create_namespace(&table_ns, HashMap::new())
            .await
            .unwrap();
        let fields = COLUMNS
            .iter()
            .zip(1..)
            .map(|(c, id)| {
                let ty = if c.name == "seq" {
                    PrimitiveType::String
                } else {
                    c.kind.primitive()
                };
                Arc::new(NestedField::optional(id, c.name, Type::Primitive(ty)))
            })
            .collect::<Vec<_>>();
        let creation = TableCreation::builder()
            .name("diffs".to_string())
            .schema(Schema::builder().with_fields(fields).build().unwrap())
            .build();
        catalog.create_table(&table_ns, creation).await.unwrap();
        let err = DiffTable::open(dir.path(), "other", "diffs")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TableError::IncompatibleColumn { column, .. } if column == "seq"),
            "{err}"
        );
        assert!(err.to_string().contains("`seq`"), "{err}");
    }

    fn err_uri(err: &TableError) -> Option<&str> {
        match err {
            TableError::MissingColumn { uri, .. } => Some(uri),
            _ => None,
        }
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (ns, t) in [("", "t"), ("a.b", "t"), ("ns", ""), ("ns", "x/y")] {
            let err = DiffTable::open(dir.path(), ns, t).await.unwrap_err();
            assert!(matches!(err, TableError::InvalidName { .. }), "{err}");
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(encode_uri_path("/tmp/a b?c#d%e"), "/tmp/a%20b%3Fc%23d%25e");
        assert_eq!(
            encode_partition_component("/v1/x y{z}"),
            "%2Fv1%2Fx+y%7Bz%7D"
        );
    }
}
