// Entry point: takes a sign-in link's token out of the address bar before anything renders.
import { render } from "preact";
import { App, takeLinkToken } from "./App.tsx";
import "./style.css";

render(<App linkToken={takeLinkToken()} />, document.getElementById("app")!);
