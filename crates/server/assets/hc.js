/* headcount embed (docs: README.md). If navigator.webdriver and no data-count-bots:
   own topic is watched (?watch=1), not counted. */
(()=>{
"use strict";
let d=document, s=d.currentScript, u=new URL(s.src), a="data-headcount", P=a+"-prefix",
 me=s.dataset.topic||location.host+location.pathname,
 bot=navigator.webdriver&&!s.hasAttribute("data-count-bots"),
 W=u.origin.replace("http","ws")+"/ws/", L=[];

let show=(l,n)=>l.forEach(e=>e.textContent=n);
let add=(o,k,e)=>(o.get(k)||o.set(k,[]).get(k)).push(e);

function sock(k,q,l){
 let b=1e3, x, T, c=()=>{
  x=new WebSocket(W+k.split("/").map(encodeURIComponent).join("/")+q);
  x.onopen=()=>b=1e3;
  x.onmessage=m=>show(l,JSON.parse(m.data).count);
  x.onclose=()=>{ T=setTimeout(c,b*(.5+Math.random()/2)); b=Math.min(2*b,3e4); };
 };
 c();
 return {close(){ clearTimeout(T); x.onclose=x.onmessage=null; x.readyState ? x.close() : x.onopen=()=>x.close(); }};
}

function sse(k,l){
 let v=new EventSource(u.origin+"/live/counts?limit=0&prefix="+encodeURIComponent(k));
 v.onmessage=m=>show(l,JSON.parse(m.data).total);
 return v;
}

let stop=()=>{ L.forEach(x=>x.close()); L=[]; };

function start(){
 stop();
 let t=new Map([[me,[]]]), p=new Map;
 d.querySelectorAll(`[${a}],[${P}]`).forEach(e=>{
  let k=e.getAttribute(P);
  k==null ? add(t,e.getAttribute(a)||me,e) : add(p,k,e);
 });
 t.forEach((l,k)=>L.push(sock(k, k==me&&!bot ? "" : "?watch=1", l)));
 p.forEach((l,k)=>L.push(sse(k,l)));
}

function init(){
 d.readyState=="loading" ? d.addEventListener("DOMContentLoaded",start) : start();
 addEventListener("pagehide",stop);
 addEventListener("pageshow",e=>e.persisted&&start());
}

d.prerendering ? d.addEventListener("prerenderingchange",init) : init();
})();
