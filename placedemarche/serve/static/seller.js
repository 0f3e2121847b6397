// The seller page: sends the product to POST /v1/categorise (multipart), shows the answer,
// and sends the category a person confirms or corrects to POST /v1/feedback when the service
// records feedback. Everything from the server is written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;
let lastAnswer = null;

function headers() {
  const key = sessionStorage.getItem("pm-api-key") || $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function problem(body, status) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => (e.loc || []).slice(1).join(".") + ": " + e.msg).join("\n");
  }
  if (body && typeof body.detail === "string") return body.detail;
  return "the service answered " + status;
}

async function call(path, options) {
  const response = await fetch(path, { ...options, headers: { ...(options && options.headers), ...headers() } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) $("key-box").hidden = false;
  if (!response.ok) throw new Error(problem(body, response.status));
  return body;
}

async function loadModel() {
  try {
    model = await call("/v1/model");
  } catch (e) {
    $("model-summary").textContent = "Model description unavailable: " + e.message;
    return;
  }
  const accuracy = model.cv_accuracy === null ? "not cross-validated" :
    "cross-validated accuracy " + (100 * model.cv_accuracy).toFixed(1) + " %";
  $("model-summary").textContent = model.model_id + ": " + model.categories.length + " categories, " +
    model.modalities.join(" + ") + ", " + accuracy + ". " + model.decision.summary + ".";
  const chosen = $("chosen");
  chosen.replaceChildren(...model.categories.map((c) => {
    const option = document.createElement("option");
    option.value = c;
    option.textContent = c;
    return option;
  }));
}

function showPhoto() {
  const file = $("photo").files[0];
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  if (!file) { preview.hidden = true; preview.removeAttribute("src"); return; }
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
}

function showAnswer(answer) {
  lastAnswer = answer;
  $("category").textContent = answer.category;
  const decision = $("decision");
  decision.textContent = answer.decision;
  decision.className = "badge " + answer.decision;
  $("decision-text").textContent = answer.decision === "auto"
    ? "accepted automatically (probability " + answer.probability.toFixed(3) + " ≥ " + answer.threshold.toFixed(3) + ")"
    : (answer.threshold === null ? "sent for review (the model has no measured threshold)"
       : "sent for review (probability " + answer.probability.toFixed(3) + " < " + answer.threshold.toFixed(3) + ")");
  $("top").replaceChildren(...answer.top.slice(0, 3).map((t) => {
    const row = document.createElement("div");
    row.className = "row top-row";
    const label = document.createElement("div");
    label.className = "top-label";
    label.textContent = t.category + " — " + (100 * t.probability).toFixed(1) + " %";
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * t.probability).toFixed(1) + "%";
    track.append(bar);
    row.append(label, track);
    return row;
  }));
  $("notes").textContent = answer.notes.join("; ");
  $("model-id").textContent = answer.model_id;
  $("seconds").textContent = answer.seconds.toFixed(3);
  $("feedback-box").hidden = !(model && model.feedback);
  $("chosen").value = answer.category;
  $("feedback-done").textContent = "";
  $("result").hidden = false;
}

async function categorise(event) {
  event.preventDefault();
  $("error").textContent = "";
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem("pm-api-key", key);
  const form = new FormData();
  const file = $("photo").files[0];
  if (file) form.append("photo", file);
  for (const field of ["name", "description"]) {
    const value = $(field).value;
    if (value.trim()) form.append(field, value);
  }
  $("submit").disabled = true;
  try {
    showAnswer(await call("/v1/categorise", { method: "POST", body: form }));
    if (!model) loadModel();
  } catch (e) {
    $("error").textContent = e.message;
  } finally {
    $("submit").disabled = false;
  }
}

async function confirm() {
  if (!lastAnswer) return;
  const category = $("chosen").value;
  try {
    await call("/v1/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ product_id: lastAnswer.id, category: category, model_id: lastAnswer.model_id,
                             name: $("name").value, description: $("description").value }),
    });
    $("feedback-done").textContent = category === lastAnswer.category ? "Confirmed: thank you." :
      "Corrected to " + category + ": thank you.";
  } catch (e) {
    $("feedback-done").textContent = "Not recorded: " + e.message;
  }
}

$("photo").addEventListener("change", showPhoto);
$("product-form").addEventListener("submit", categorise);
$("confirm").addEventListener("click", confirm);
$("chosen").addEventListener("change", () => {
  $("confirm").textContent = lastAnswer && $("chosen").value !== lastAnswer.category ? "Correct" : "Confirm";
});
loadModel();
