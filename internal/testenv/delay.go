package testenv

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// DelayProxy forwards TCP connections from a new loopback address to target,
// holding every chunk of bytes for oneWay in each direction, so that a request and
// its answer take 2*oneWay longer: a WAN round trip in front of a real server. Only
// latency is added, not a bandwidth limit, and order is kept. Close stops it.
type DelayProxy struct {
	Addr   string
	ln     net.Listener
	target string
	oneWay time.Duration
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// StartDelayProxy listens on 127.0.0.1 and forwards to target (host:port).
func StartDelayProxy(target string, oneWay time.Duration) (*DelayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{Addr: ln.Addr().String(), ln: ln, target: target, oneWay: oneWay, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *DelayProxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.conns == nil {
			return false // closed
		}
		p.conns[c] = struct{}{}
	} else if p.conns != nil {
		delete(p.conns, c)
	}
	return true
}

func (p *DelayProxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	if !p.track(client, true) || !p.track(server, true) {
		return
	}
	defer p.track(client, false)
	defer p.track(server, false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client) }()
	go func() { defer wg.Done(); p.pipe(client, server) }()
	wg.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, each chunk oneWay after it was read.
func (p *DelayProxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				break
			}
		}
		// Drain what is left so the reader never blocks on a dead writer.
		for range q {
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.oneWay)}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	// Pass the end on: a half-close when the other side can take one.
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// Close stops listening and cuts every connection.
func (p *DelayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

var _ io.Closer = (*DelayProxy)(nil)

// WriteDelayedKubeconfig writes a kubeconfig like Kubeconfig (admin tokens, one
// context per cluster) whose servers are DelayProxies adding oneWay each way in
// front of every apiserver. The returned stop closes the proxies.
func (env *K8s) WriteDelayedKubeconfig(path string, oneWay time.Duration) (stop func(), err error) {
	var proxies []*DelayProxy
	stop = func() {
		for _, p := range proxies {
			_ = p.Close()
		}
	}
	hosts := map[*K8sCluster]string{}
	for _, c := range env.Clusters {
		u, err := url.Parse(c.Host)
		if err != nil {
			stop()
			return nil, err
		}
		p, err := StartDelayProxy(u.Host, oneWay)
		if err != nil {
			stop()
			return nil, err
		}
		proxies = append(proxies, p)
		u.Host = p.Addr
		hosts[c] = u.String()
	}
	cfg := clientcmdapi.NewConfig()
	for _, c := range env.Clusters {
		cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: hosts[c], CertificateAuthorityData: c.CAData}
		cfg.AuthInfos[c.Name+"-admin"] = &clientcmdapi.AuthInfo{Token: c.AdminToken}
		cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name + "-admin"}
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}
