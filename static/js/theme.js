// The saved theme, applied before the first paint (loaded without defer in <head>; an inline script
// would need 'unsafe-inline' in the Content-Security-Policy).
document.documentElement.dataset.theme = localStorage.getItem("studio-theme") || "";
