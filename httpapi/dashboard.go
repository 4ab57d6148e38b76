package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
)

// dashboardFiles are the dashboard's page, script and styles: served from
// the binary, nothing fetched from elsewhere.
//
//go:embed dashboard
var dashboardFiles embed.FS

// dashboardCSP lets the page load only its own files and talk only to
// this node.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// dashboardRoutes serves the dashboard on /dashboard (and / redirects
// there). The page itself holds no data: it reads the operator and admin
// endpoints, with the admin token the operator enters.
func (h *handler) dashboardRoutes() {
	sub, _ := fs.Sub(dashboardFiles, "dashboard")
	files := http.StripPrefix("/dashboard/", http.FileServerFS(sub))
	secure := func(f http.Handler) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			hdr := w.Header()
			hdr.Set("Content-Security-Policy", dashboardCSP)
			hdr.Set("X-Content-Type-Options", "nosniff")
			hdr.Set("X-Frame-Options", "DENY")
			hdr.Set("Referrer-Policy", "no-referrer")
			hdr.Set("Cache-Control", "no-cache")
			f.ServeHTTP(w, r)
		}
	}
	h.route("GET", "/dashboard", secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := dashboardFiles.ReadFile("dashboard/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b)
	})))
	h.mux.HandleFunc("GET /dashboard/{file}", secure(files))
	h.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard", http.StatusFound)
	})
}
