// Package backend asks the application beside herald over HTTP: its Proxy
// implements herald's Hooks (Connect, AuthorizeSubscribe,
// AuthorizePublish, RPC, Refresh) as POST requests to the application's
// URLs, so that herald serve's --proxy-* flags and an application that
// embeds herald with Go hooks go through the same admission code
// (access.go). It joins the message flow only there: a hook whose URL is
// not set is not installed, and costs nothing.
//
// Every call sends a JSON body with Content-Type application/json and the
// client's own request headers named by Config.Headers, and is bounded by
// Config.Timeout. The application answers 200 with {"result":{…}} to
// allow or {"error":{"code","message"}} to refuse; the code reaches the
// client as it is (one the contract does not know becomes forbidden, its
// message kept). Anything else — another status, a body that is neither,
// a result of the wrong shape, no answer in time — fails closed with
// unavailable: nothing is let through that the application did not allow.
package backend

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
)

// DefaultTimeout bounds one call when Config.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// maxAnswer bounds the body of one answer; a longer one is unusable.
const maxAnswer = 4 << 20

// Config names the application's URLs; an empty URL leaves its hook out.
type Config struct {
	// Connect is called for each connection without a token, before the
	// upgrade or stream starts: {"client","transport","remote_addr"} →
	// {"user","expire_at","channels","info"}.
	Connect string
	// Subscribe is called for each subscription (and history and
	// presence read): {"client","user","channel","transport"}.
	Subscribe string
	// Publish is called for each client publish:
	// {"client","user","channel","data","event"} → {"data"} (replaces
	// what is published when present). A raw binary frame goes as a base64
	// string in data, with "binary":true; replaced data is JSON.
	Publish string
	// RPC answers the rpc command: {"client","user","method","data"} →
	// {"data"}.
	RPC string
	// Refresh renews a proxied connection's expiry: {"client","user"} →
	// {"expire_at"} or {"expired":true}.
	Refresh string
	// Headers names the client request headers copied onto every call of
	// its connection; nil copies none.
	Headers []string
	// Timeout bounds one call [DefaultTimeout].
	Timeout time.Duration
	// Client makes the calls; nil: a client of the Proxy's own, which
	// keeps connections to the application open between calls.
	Client *http.Client
	// Logger receives why calls failed; nil discards.
	Logger *slog.Logger
}

// Proxy asks the application; see the package doc.
type Proxy struct {
	cfg Config
}

// New checks cfg (every URL set must be absolute http or https) and fills
// its defaults.
func New(cfg Config) (*Proxy, error) {
	for _, u := range []struct{ name, url string }{
		{"connect", cfg.Connect}, {"subscribe", cfg.Subscribe}, {"publish", cfg.Publish},
		{"rpc", cfg.RPC}, {"refresh", cfg.Refresh},
	} {
		if u.url == "" {
			continue
		}
		if err := CheckURL(u.url); err != nil {
			return nil, fmt.Errorf("backend: %s proxy: %w", u.name, err)
		}
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("backend: Timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Every client connection may call at once: keep as many
		// connections to the application as a burst of them uses.
		t.MaxIdleConnsPerHost = 256
		cfg.Client = &http.Client{Transport: t}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg}, nil
}

// CheckURL refuses what cannot be a proxy URL: it must be absolute, http
// or https, with a host.
func CheckURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("URL %q: want http:// or https:// and a host", u)
	}
	return nil
}

// Hooks returns the hooks whose URL is set, and Headers for them.
func (p *Proxy) Hooks() herald.Hooks {
	h := herald.Hooks{Headers: p.cfg.Headers}
	if p.cfg.Connect != "" {
		h.Connect = p.connect
	}
	if p.cfg.Subscribe != "" {
		h.AuthorizeSubscribe = p.subscribe
	}
	if p.cfg.Publish != "" {
		h.AuthorizePublish = p.publish
	}
	if p.cfg.RPC != "" {
		h.RPC = p.rpc
	}
	if p.cfg.Refresh != "" {
		h.Refresh = p.refresh
	}
	return h
}

func (p *Proxy) connect(ctx context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
	var res struct {
		User     string          `json:"user"`
		ExpireAt float64         `json:"expire_at"`
		Channels []string        `json:"channels"`
		Info     json.RawMessage `json:"info"`
	}
	body := map[string]any{"client": req.Client, "transport": req.Transport, "remote_addr": req.Request.RemoteAddr}
	if err := p.call(ctx, "connect", p.cfg.Connect, req.Request.Header, body, &res); err != nil {
		return herald.ConnectResult{}, err
	}
	if string(res.Info) == "null" {
		res.Info = nil
	}
	return herald.ConnectResult{User: res.User, ExpireAt: unixTime(res.ExpireAt), Channels: res.Channels, Info: res.Info}, nil
}

func (p *Proxy) subscribe(ctx context.Context, c herald.Client, channel string) error {
	body := map[string]any{"client": c.ID, "user": c.User, "channel": channel, "transport": c.Transport}
	return p.call(ctx, "subscribe", p.cfg.Subscribe, c.Header, body, &struct{}{})
}

func (p *Proxy) publish(ctx context.Context, c herald.Client, channel string, pub *herald.Publication) error {
	var res struct {
		Data json.RawMessage `json:"data"`
	}
	body := map[string]any{"client": c.ID, "user": c.User, "channel": channel, "data": pub.Data, "event": pub.Event}
	if pub.Binary {
		body["data"], body["binary"] = base64.StdEncoding.EncodeToString(pub.Data), true
	}
	if err := p.call(ctx, "publish", p.cfg.Publish, c.Header, body, &res); err != nil {
		return err
	}
	if res.Data != nil {
		pub.Data, pub.Binary = res.Data, false
	}
	return nil
}

func (p *Proxy) rpc(ctx context.Context, c herald.Client, method string, data json.RawMessage) (json.RawMessage, error) {
	var res struct {
		Data json.RawMessage `json:"data"`
	}
	body := map[string]any{"client": c.ID, "user": c.User, "method": method, "data": data}
	if err := p.call(ctx, "rpc", p.cfg.RPC, c.Header, body, &res); err != nil {
		return nil, err
	}
	return res.Data, nil
}

func (p *Proxy) refresh(ctx context.Context, c herald.Client) (herald.RefreshResult, error) {
	var res struct {
		ExpireAt float64 `json:"expire_at"`
		Expired  bool    `json:"expired"`
	}
	if err := p.call(ctx, "refresh", p.cfg.Refresh, c.Header, map[string]any{"client": c.ID, "user": c.User}, &res); err != nil {
		return herald.RefreshResult{}, err
	}
	return herald.RefreshResult{ExpireAt: unixTime(res.ExpireAt), Expired: res.Expired}, nil
}

// unixTime is a time given in Unix seconds; zero for 0.
func unixTime(sec float64) time.Time {
	if sec <= 0 {
		return time.Time{}
	}
	whole, frac := math.Modf(sec)
	return time.Unix(int64(whole), int64(frac*1e9))
}

// answer is the shape of every answer.
type answer struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    herald.Code `json:"code"`
		Message string      `json:"message"`
	} `json:"error"`
}

// call posts body to the proxy kind at u with the client's headers from
// header, and decodes the result into result: nil when the application
// allowed, its *herald.Error when it refused, unavailable otherwise.
func (p *Proxy) call(ctx context.Context, kind, u string, header http.Header, body, result any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("backend: encode %s request: %w", kind, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("backend: %s request: %w", kind, err)
	}
	for _, name := range p.cfg.Headers {
		for _, v := range header.Values(name) {
			req.Header.Add(name, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return p.unavailable(kind, "did not answer within "+p.cfg.Timeout.String(), err)
		}
		return p.unavailable(kind, "could not be reached", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	switch {
	case err != nil:
		return p.unavailable(kind, "answer could not be read", err)
	case resp.StatusCode != http.StatusOK:
		return p.unavailable(kind, "answered HTTP "+strconv.Itoa(resp.StatusCode), nil)
	case len(raw) > maxAnswer:
		return p.unavailable(kind, "answer is over "+strconv.Itoa(maxAnswer)+" bytes", nil)
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return p.unavailable(kind, "answer is not the JSON of a result or an error", err)
	}
	hasResult := len(a.Result) > 0 && string(a.Result) != "null"
	switch {
	case a.Error != nil && !hasResult:
		return refusal(a.Error.Code, a.Error.Message)
	case a.Error != nil || !hasResult || a.Result[0] != '{':
		return p.unavailable(kind, `answer is neither {"result":{…}} nor {"error":{…}}`, nil)
	}
	if err := json.Unmarshal(a.Result, result); err != nil {
		return p.unavailable(kind, "result has the wrong shape", err)
	}
	return nil
}

// refusal is the application's refusal as the client sees it: its code
// when the contract knows it, else forbidden; its message.
func refusal(code herald.Code, message string) error {
	switch code {
	case herald.CodeBadRequest, herald.CodeUnauthorized, herald.CodeForbidden, herald.CodeNotFound,
		herald.CodeTooLarge, herald.CodeRateLimited, herald.CodeUnavailable, herald.CodeInternal:
	default:
		code = herald.CodeForbidden
	}
	if message == "" {
		message = "refused by the application"
	}
	return herald.Errorf(code, message)
}

// unavailable logs why a call failed and returns what the client sees.
func (p *Proxy) unavailable(kind, why string, err error) error {
	p.cfg.Logger.Warn("backend: the application failed", "proxy", kind, "why", why, "err", err)
	return herald.Errorf(herald.CodeUnavailable, "the application's "+kind+" proxy "+why)
}
