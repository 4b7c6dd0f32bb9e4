package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/webhook"
)

// config is what the app needs to run.
type config struct {
	HeraldURL     string // where herald listens
	DatabaseURL   string // the app's database, where herald reads herald_outbox
	SessionKey    []byte // signs session cookies
	WebhookSecret []byte // herald's --webhook-secret
}

// app is the notes app.
type app struct {
	cfg    config
	db     *pgxpool.Pool
	herald http.Handler // passes requests on to herald

	mu     sync.Mutex
	seen   map[string]bool   // ids of the webhook events handled
	online map[string]string // client id → user, from connect and disconnect events
}

// schema is the app's table, and herald's outbox table as docs/backend.md
// gives it, so that the app can write to it before herald first starts.
// herald adds what else it needs (its dead-letter table and a trigger)
// when it starts.
const schema = `
CREATE TABLE IF NOT EXISTS notes (
  id         bigserial PRIMARY KEY,
  author     text NOT NULL,
  recipient  text NOT NULL,
  text       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS herald_outbox (
  id         bigserial PRIMARY KEY,
  channel    text  NOT NULL,
  data       jsonb NOT NULL,
  event      text,
  created_at timestamptz NOT NULL DEFAULT now()
);`

// newApp connects to the database and creates the tables that are missing.
func newApp(ctx context.Context, cfg config) (*app, error) {
	target, err := url.Parse(cfg.HeraldURL)
	if err != nil {
		return nil, fmt.Errorf("herald URL: %w", err)
	}
	db, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if _, err := db.Exec(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create tables: %w", err)
	}
	return &app{
		cfg:    cfg,
		db:     db,
		herald: heraldProxy(target),
		seen:   make(map[string]bool),
		online: make(map[string]string),
	}, nil
}

// close closes the database pool.
func (a *app) close() { a.db.Close() }

// sessionCookie names the session cookie, which holds
// "<user>.<expiry in Unix seconds>.<hex HMAC-SHA256 of what precedes>".
const sessionCookie = "session"

// sessionTTL is how long a login lasts. The connect proxy gives herald the
// session's expiry, so a connection ends with its session.
const sessionTTL = 12 * time.Hour

// login starts a session for the form's user. There are no passwords:
// whoever types a name is that user. A real app checks credentials here;
// the rest stays the same.
func (a *app) login(w http.ResponseWriter, r *http.Request) {
	user := r.FormValue("user")
	if !validName(user) {
		http.Error(w, "a name is 1 to 32 of a-z, 0-9, _ and -", http.StatusBadRequest)
		return
	}
	exp := time.Now().Add(sessionTTL)
	v := user + "." + strconv.FormatInt(exp.Unix(), 10)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: v + "." + a.sign(v), Path: "/", Expires: exp,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, // and Secure, behind HTTPS
	})
	writeJSON(w, http.StatusOK, map[string]string{"user": user})
}

// session returns the user of r's session cookie and when it ends.
func (a *app) session(r *http.Request) (string, time.Time, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", time.Time{}, errors.New("log in first")
	}
	i := strings.LastIndexByte(c.Value, '.')
	if i < 0 || !hmac.Equal([]byte(c.Value[i+1:]), []byte(a.sign(c.Value[:i]))) {
		return "", time.Time{}, errors.New("bad session: log in again")
	}
	user, ts, _ := strings.Cut(c.Value[:i], ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Now().Unix() >= sec {
		return "", time.Time{}, errors.New("session expired: log in again")
	}
	return user, time.Unix(sec, 0), nil
}

// sign returns the hex HMAC of v with the session key.
func (a *app) sign(v string) string {
	m := hmac.New(sha256.New, a.cfg.SessionKey)
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

// validName reports whether s may be a user name: it becomes part of a
// channel name, inbox:<user>, and of the session cookie.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// inbox is the channel of user's notes.
func inbox(user string) string { return "inbox:" + user }

// connect is herald's connect proxy. herald copies the client's Cookie
// header onto the request, so the app reads its own session as it would
// on any other request of the browser.
func (a *app) connect(w http.ResponseWriter, r *http.Request) {
	user, exp, err := a.session(r)
	if err != nil {
		refuse(w, "unauthorized", err.Error())
		return
	}
	allow(w, map[string]any{
		"user":      user,
		"channels":  []string{inbox(user)}, // subscribed at once, server-side
		"expire_at": exp.Unix(),            // herald closes the connection then
	})
}

// rpc is herald's rpc proxy. herald sends the user it knows from connect;
// the app checks it against the forwarded cookie all the same, since
// this route is as public as the rest of the app.
func (a *app) rpc(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User   string          `json:"user"`
		Method string          `json:"method"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		refuse(w, "bad_request", "not JSON")
		return
	}
	user, _, err := a.session(r)
	if err != nil || user != req.User {
		refuse(w, "unauthorized", "log in first")
		return
	}
	switch req.Method {
	case "whoami":
		allow(w, map[string]any{"data": map[string]string{"user": user}})
	case "notes":
		// A failed query comes back as CollectRows's error.
		rows, _ := a.db.Query(r.Context(), `SELECT id, author, recipient, text, created_at
FROM notes WHERE recipient = $1 ORDER BY id DESC LIMIT 20`, user)
		notes, err := pgx.CollectRows(rows, pgx.RowToStructByName[note])
		if err != nil {
			log.Printf("rpc notes: %v", err)
			refuse(w, "internal", "the notes are not at hand")
			return
		}
		allow(w, map[string]any{"data": notes})
	default:
		refuse(w, "bad_request", "no method "+strconv.Quote(req.Method))
	}
}

// event takes one of herald's webhook events. herald sends each at least
// once, so the app handles each id once; a real app keeps the ids in its
// database, for as long as herald retries (--webhook-retry-for).
func (a *app) event(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read the body", http.StatusBadRequest)
		return
	}
	// Check the signature of the raw body before anything else.
	if err := webhook.Verify(a.cfg.WebhookSecret, r.Header.Get(webhook.SignatureHeader), body, time.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var e webhook.Event
	if err := json.Unmarshal(body, &e); err != nil || e.ID == "" {
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen[e.ID] {
		w.WriteHeader(http.StatusNoContent) // a repeat: acknowledge it again
		return
	}
	a.seen[e.ID] = true
	switch e.Type {
	case webhook.Connect:
		if e.User != nil && *e.User != "" {
			a.online[e.Client] = *e.User
		}
	case webhook.Disconnect:
		delete(a.online, e.Client)
	}
	w.WriteHeader(http.StatusNoContent) // any 2xx acknowledges it
}

// listOnline answers {"users": [...]}: who has a connection, by the
// webhooks so far.
func (a *app) listOnline(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	users := []string{}
	for _, u := range a.online {
		if !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	a.mu.Unlock()
	slices.Sort(users)
	writeJSON(w, http.StatusOK, map[string][]string{"users": users})
}

// note is one note, as stored and as published.
type note struct {
	ID   int64     `json:"id" db:"id"`
	From string    `json:"from" db:"author"`
	To   string    `json:"to" db:"recipient"`
	Text string    `json:"text" db:"text"`
	At   time.Time `json:"at" db:"created_at"`
}

// addNote stores a note from the session's user to the form's "to" (or to
// themself) and, in the same transaction, the outbox row that herald
// publishes to the recipient's inbox once it is committed: both or
// neither.
func (a *app) addNote(w http.ResponseWriter, r *http.Request) {
	user, _, err := a.session(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	n := note{From: user, To: r.FormValue("to"), Text: r.FormValue("text")}
	if n.To == "" {
		n.To = user
	}
	if !validName(n.To) || n.Text == "" || len(n.Text) > 1000 {
		http.Error(w, "a note needs a text of up to 1000 bytes and a valid recipient", http.StatusBadRequest)
		return
	}
	err = pgx.BeginFunc(r.Context(), a.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(r.Context(),
			`INSERT INTO notes (author, recipient, text) VALUES ($1, $2, $3) RETURNING id, created_at`,
			n.From, n.To, n.Text).Scan(&n.ID, &n.At); err != nil {
			return fmt.Errorf("insert the note: %w", err)
		}
		msg, err := json.Marshal(n)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(r.Context(),
			`INSERT INTO herald_outbox (channel, data, event) VALUES ($1, $2, 'note')`,
			inbox(n.To), msg); err != nil {
			return fmt.Errorf("insert the outbox row: %w", err)
		}
		return nil
	})
	if err != nil {
		log.Printf("add a note: %v", err)
		http.Error(w, "the note was not saved", http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusCreated, n)
}

// allow answers a proxy request with {"result": result}: herald lets it
// through.
func allow(w http.ResponseWriter, result any) {
	writeJSON(w, http.StatusOK, map[string]any{"result": result})
}

// refuse answers a proxy request with {"error": …}: herald refuses it,
// and the client gets code and message as they are.
func refuse(w http.ResponseWriter, code, message string) {
	writeJSON(w, http.StatusOK, map[string]any{"error": map[string]string{"code": code, "message": message}})
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
