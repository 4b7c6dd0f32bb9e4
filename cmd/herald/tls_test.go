package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/heraldtest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "herald test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// herald serve --tls-cert --tls-key answers HTTPS with HTTP/2, carries
// SSE over it, and upgrades WebSockets (wss://).
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "serve", "--addr", addr, "--tls-cert", certFile, "--tls-key", keyFile)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	base := "https://" + addr
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		resp, err := h2.Get(base + "/healthz")
		if err != nil {
			return fmt.Errorf("GET /healthz: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /healthz: %s, want 200", resp.Status)
		}
		return nil
	})
	resp, err := h2.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("HTTPS answered over %s, want HTTP/2", resp.Proto)
	}

	// An SSE stream over HTTP/2, and a message published over wss://.
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?channel=tls", nil)
	stream, err := h2.Do(req)
	if err != nil || stream.StatusCode != http.StatusOK || stream.ProtoMajor != 2 {
		t.Fatalf("SSE over TLS: %v %v", stream, err)
	}
	defer stream.Body.Close()
	ws, _, err := websocket.Dial(ctx, "wss://"+addr+"/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	})
	if err != nil {
		t.Fatalf("wss dial: %v\n%s", err, logs)
	}
	defer ws.CloseNow()
	_, welcome, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(welcome), `"op":"welcome"`) {
		t.Fatalf("wss welcome: %s %v", welcome, err)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"id":1,"op":"publish","channel":"tls","data":"over tls"}`)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 1024)
	for !strings.Contains(string(buf), "data: over tls") {
		n, err := stream.Body.Read(tmp)
		if err != nil && err != io.EOF {
			t.Fatalf("SSE read: %v (so far %q)", err, buf)
		}
		buf = append(buf, tmp[:n]...)
	}
}

func TestTLSSettings(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"cert without key": {"--tls-cert", "x.pem"},
		"acme and files":   {"--acme-host", "herald.example", "--tls-cert", "c", "--tls-key", "k"},
		"missing files":    {"--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"},
	} {
		s, err := loadSettings(args, nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.tls(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	s, err := loadSettings([]string{"--acme-host", "herald.example", "--acme-cache", t.TempDir()}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.tls()
	if err != nil || c == nil || c.GetCertificate == nil || c.NextProtos[0] != "h2" {
		t.Fatalf("ACME TLS config: %+v, %v", c, err)
	}
}
