package peers

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // cgo SQLite driver, the one goqite's own tests use
	"maragu.dev/goqite"
)

// BenchmarkGoqite runs maragu.dev/goqite, a queue in one SQLite table, on
// github.com/mattn/go-sqlite3 with journal_mode=WAL:
//
//	sync=full    PRAGMA synchronous=FULL: each commit fsyncs the WAL
//	sync=normal  PRAGMA synchronous=NORMAL: commits are not synced; the WAL
//	             is synced at checkpoints
//
// Every Send, Receive and Delete is its own transaction. SQLite has one
// writer at a time, so the pool is limited to one connection: producers=16
// queue in database/sql instead of spinning in SQLite's busy handler.
// op=consume+ack is Receive (which hides the message for its visibility
// timeout) then Delete.
func BenchmarkGoqite(b *testing.B) {
	runPeer(b, goqiteConfigs())
}

func goqiteConfigs() []config {
	var cs []config
	for _, sync := range []string{"full", "normal"} {
		cs = append(cs, config{
			name: "sync=" + sync,
			open: func(_ testing.TB, dir string) (store, error) { return openGoqite(dir, strings.ToUpper(sync)) },
		})
	}
	return cs
}

// goqiteSchema is our own table for goqite, which ships no SQLite schema in
// its API: the columns its statements read and write. Times are text in the
// format goqite writes (RFC 3339, milliseconds, UTC) so they compare as text.
const goqiteSchema = `
create table goqite (
	id       text not null primary key default (lower(hex(randomblob(16)))),
	queue    text not null,
	body     blob not null,
	priority integer not null default 0,
	received integer not null default 0,
	created  text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
	timeout  text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
create index goqite_next on goqite (queue, priority desc, created);
`

type goqiteStore struct {
	db *sql.DB
	q  *goqite.Queue
}

func openGoqite(dir, synchronous string) (*goqiteStore, error) {
	dsn := fmt.Sprintf("file:%s?_journal_mode=WAL&_synchronous=%s&_busy_timeout=10000&_txlock=immediate",
		filepath.Join(dir, "goqite.db"), synchronous)
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := checkPragma(db, "journal_mode", "wal"); err != nil {
		db.Close()
		return nil, err
	}
	want := map[string]string{"FULL": "2", "NORMAL": "1"}[synchronous]
	if err := checkPragma(db, "synchronous", want); err != nil {
		db.Close()
		return nil, err
	}
	if _, err := db.Exec(goqiteSchema); err != nil {
		db.Close()
		return nil, err
	}
	q := goqite.New(goqite.NewOpts{DB: db, Name: "bench", Timeout: time.Hour})
	return &goqiteStore{db: db, q: q}, nil
}

// checkPragma fails unless PRAGMA name reads want: the DSN parameters are
// applied by the driver, and a typo would silently leave the default.
func checkPragma(db *sql.DB, name, want string) error {
	var got string
	if err := db.QueryRow("PRAGMA " + name).Scan(&got); err != nil {
		return err
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("PRAGMA %s is %q, want %q", name, got, want)
	}
	return nil
}

func (s *goqiteStore) Send(ctx context.Context, body []byte) error {
	return s.q.Send(ctx, goqite.Message{Body: body})
}

// Fill sends n messages in one transaction.
func (s *goqiteStore) Fill(ctx context.Context, body []byte, n int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for range n {
		if err := s.q.SendTx(ctx, tx, goqite.Message{Body: body}); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// Consume is ConsumeConcurrently with one consumer.
func (s *goqiteStore) Consume(ctx context.Context, n, size int) error {
	return s.ConsumeConcurrently(ctx, n, size, 1)
}

// Held counts the queue's rows, received or not.
func (s *goqiteStore) Held(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `select count(*) from goqite where queue = ?`, "bench").Scan(&n)
	return n, err
}

func (s *goqiteStore) Close() error { return s.db.Close() }
