//! rosbag2 sqlite3 storage (`.db3`): tables `topics(id, name, type, ...)` and
//! `messages(id, topic_id, timestamp, data)`, with an index on `timestamp`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{BagError, BagMessage, TopicInfo};

/// Rows fetched per query. Each query is short-lived so no statement borrows the connection
/// across `next()` calls, and a corrupt page only costs the rows after it.
const BATCH: i64 = 8;

fn sql_err(path: &Path, e: impl std::fmt::Display) -> BagError {
    BagError::Sqlite {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn open_conn(path: &Path) -> Result<Connection, BagError> {
    // Open read-only and refuse to create: a wrong path must not leave an empty database.
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, e))
}

/// topic id -> (name, type).
fn read_topics(conn: &Connection, path: &Path) -> Result<HashMap<i64, (String, String)>, BagError> {
    let mut stmt = conn
        .prepare("SELECT id, name, type FROM topics")
        .map_err(|e| sql_err(path, e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, (r.get(1)?, r.get(2)?))))
        .map_err(|e| sql_err(path, e))?;
    rows.collect::<Result<HashMap<_, _>, _>>()
        .map_err(|e| sql_err(path, e))
}

/// Topics with their message counts. Unlike the message stream this needs every page of the
/// messages table, so a damaged file is an error here.
pub fn topics(path: &Path) -> Result<Vec<TopicInfo>, BagError> {
    let conn = open_conn(path)?;
    let names = read_topics(&conn, path)?;
    let mut counts: HashMap<i64, u64> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id")
        .map_err(|e| sql_err(path, e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(|e| sql_err(path, e))?;
    for row in rows {
        let (id, n) = row.map_err(|e| sql_err(path, e))?;
        counts.insert(id, u64::try_from(n).unwrap_or(0));
    }
    let mut out: Vec<TopicInfo> = names
        .into_iter()
        .map(|(id, (name, msg_type))| TopicInfo {
            name,
            msg_type,
            count: counts.get(&id).copied().unwrap_or(0),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Messages of one sqlite3 file in (timestamp, id) order, read in small keyset-paginated
/// batches. A read error yields the rows fetched before it, then one error, then ends.
pub struct SqliteMessages {
    path: PathBuf,
    conn: Connection,
    topics: HashMap<i64, (String, String)>,
    sql: String,
    /// (timestamp, id) of the last row fetched.
    cursor: (i64, i64),
    pending: VecDeque<Result<BagMessage, BagError>>,
    yielded: u64,
    exhausted: bool,
}

impl SqliteMessages {
    pub fn open(path: &Path, topic_filter: Option<&[String]>) -> Result<Self, BagError> {
        let conn = open_conn(path)?;
        let topics = read_topics(&conn, path)?;
        let mut sql = String::from(
            "SELECT id, topic_id, timestamp, data FROM messages \
             WHERE timestamp >= ?1 AND (timestamp > ?1 OR id > ?2)",
        );
        let mut exhausted = false;
        if let Some(filter) = topic_filter {
            let ids: Vec<String> = topics
                .iter()
                .filter(|(_, (name, _))| filter.contains(name))
                .map(|(id, _)| id.to_string())
                .collect();
            if ids.is_empty() {
                exhausted = true;
            }
            // Ids are integers read from the file, so formatting them into the SQL is safe.
            sql.push_str(&format!(" AND topic_id IN ({})", ids.join(",")));
        }
        sql.push_str(" ORDER BY timestamp, id LIMIT ?3");
        Ok(Self {
            path: path.to_path_buf(),
            conn,
            topics,
            sql,
            cursor: (i64::MIN, i64::MIN),
            pending: VecDeque::new(),
            yielded: 0,
            exhausted,
        })
    }

    fn row_to_message(
        &self,
        id: i64,
        topic_id: i64,
        ts: i64,
        data: Vec<u8>,
    ) -> Result<BagMessage, BagError> {
        let (topic, msg_type) = self.topics.get(&topic_id).cloned().ok_or_else(|| {
            sql_err(
                &self.path,
                format!("message id {id} names unknown topic id {topic_id}"),
            )
        })?;
        let log_time_ns = u64::try_from(ts).map_err(|_| {
            sql_err(
                &self.path,
                format!("message id {id} has negative timestamp {ts}"),
            )
        })?;
        Ok(BagMessage {
            topic,
            msg_type,
            log_time_ns,
            data,
        })
    }

    /// Fetches the next batch into `pending`.
    fn fill(&mut self) {
        type Row = (i64, i64, i64, rusqlite::Result<Vec<u8>>);
        let mut rows: Vec<Row> = Vec::new();
        let res: rusqlite::Result<()> = (|| {
            let mut stmt = self.conn.prepare_cached(&self.sql)?;
            let mut q = stmt.query(rusqlite::params![self.cursor.0, self.cursor.1, BATCH])?;
            while let Some(r) = q.next()? {
                rows.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)));
            }
            Ok(())
        })();
        let got = rows.len() as i64;
        for (id, topic_id, ts, data) in rows {
            self.cursor = (ts, id);
            // A row whose data is not a blob is one bad message, not a damaged file.
            let item = data
                .map_err(|e| sql_err(&self.path, format!("message id {id}: {e}")))
                .and_then(|d| self.row_to_message(id, topic_id, ts, d));
            self.pending.push_back(item);
        }
        match res {
            Err(e) => {
                self.exhausted = true;
                let msg = format!(
                    "{e} (stopped after {} messages; last good timestamp {}, id {})",
                    self.yielded + got as u64,
                    self.cursor.0,
                    self.cursor.1
                );
                self.pending.push_back(Err(sql_err(&self.path, msg)));
            }
            Ok(()) if got < BATCH => self.exhausted = true,
            Ok(()) => {}
        }
    }
}

impl Iterator for SqliteMessages {
    type Item = Result<BagMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.is_empty() && !self.exhausted {
            self.fill();
        }
        let item = self.pending.pop_front()?;
        if item.is_ok() {
            self.yielded += 1;
        }
        Some(item)
    }
}
