"""Calendar and email: events, reminders, contacts, sending and searching mail."""

import random

from swiftjax.agent.toolbox._base import (Tool, arr_arg, int_arg, join, opts, registrar, seeded,
                                          str_arg)
from swiftjax.agent.toolbox.world import (CONTACTS, EMAILS, EVENTS, add_minutes, random_clock,
                                          random_date)

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)


def _email_of(name: str) -> str:
  domain = seeded("domain", name).choice(("example.com", "mail.com", "work.org"))
  return name.lower().replace(" ", ".").replace("'", "") + "@" + domain


@_tool("create_calendar_event", "calendar", "Create an event in the user's calendar.",
       {"title": str_arg("Event title"), "date": str_arg("Date, YYYY-MM-DD"),
        "start_time": str_arg("Start time, HH:MM (24-hour)"),
        "duration_minutes": int_arg("Length in minutes (default 60)", 5, 600),
        "attendees": arr_arg("Email addresses to invite", "string")},
       ["title", "date", "start_time"],
       sample=lambda r: opts(r, {"title": r.choice(EVENTS), "date": random_date(r),
                                 "start_time": random_clock(r)},
                             duration_minutes=lambda: r.choice((15, 30, 45, 90, 120)),
                             attendees=lambda: [_email_of(c) for c in r.sample(CONTACTS, 2)]),
       questions=("Add '{title}' to my calendar on {date} at {start_time}< for "
                  "{duration_minutes} minutes>< and invite {attendees}>.",
                  "Schedule {title} for {date} at {start_time}<, lasting {duration_minutes} "
                  "minutes><, with {attendees}>.",
                  "Put \"{title}\" in my calendar: {date}, {start_time}<, {duration_minutes} "
                  "min>.< Invite {attendees}.>"),
       intent="create the event '{title}' on {date} at {start_time}",
       answers=("Done: '{title}' is on your calendar for {date} from {start_time} to "
                "{end_time}.< Invitations went to {attendees}.>",
                "I've scheduled {title} on {date}, {start_time}-{end_time} (event {event_id})."))
def _create_calendar_event(args):
  r = seeded("event", args)
  out = {"event_id": f"evt_{r.randrange(16 ** 6):06x}", "title": args["title"],
         "date": args["date"], "start_time": args["start_time"],
         "end_time": add_minutes(args["start_time"], args.get("duration_minutes", 60))[0],
         "status": "confirmed"}
  if args.get("attendees"):
    out["attendees"] = args["attendees"]
  return out


@_tool("list_calendar_events", "calendar", "List the events in the user's calendar on a date.",
       {"date": str_arg("Date, YYYY-MM-DD")}, ["date"],
       sample=lambda r: {"date": random_date(r)},
       questions=("What's on my calendar on {date}?", "Do I have any meetings on {date}?",
                  "List my events for {date}.", "What does my schedule look like on {date}?"),
       intent="list the calendar events on {date}",
       answers=("On {date} you have {events_text}.",
                "You have {n_events} event(s) on {date}: {events_text}."),
       derive=lambda a, res: {"n_events": len(res["events"]), "events_text": join(
           f"{e['title']} at {e['start_time']}" for e in res["events"]),
                              "first_title": res["events"][0]["title"],
                              "first_start": res["events"][0]["start_time"]})
def _list_calendar_events(args):
  r = seeded("calendar", args["date"])
  starts = sorted(r.sample(range(8, 19), r.randint(1, 3)))
  return {"date": args["date"], "events": [
      {"title": t, "start_time": f"{h:02d}:{r.choice((0, 30)):02d}"}
      for t, h in zip(r.sample(EVENTS, len(starts)), starts)]}


@_tool("set_reminder", "calendar", "Set a reminder that notifies the user at a date and time.",
       {"message": str_arg("What to be reminded of"), "date": str_arg("Date, YYYY-MM-DD"),
        "time": str_arg("Time, HH:MM (24-hour)")}, ["message", "date", "time"],
       sample=lambda r: {"message": r.choice(("Call mom", "Take the medication",
                                              "Pay the electricity bill", "Water the plants",
                                              "Submit the expense report", "Pick up the dry "
                                              "cleaning")), "date": random_date(r),
                         "time": random_clock(r)},
       questions=("Remind me to {task} on {date} at {time}.",
                  "Set a reminder for {date} at {time}: {task}.",
                  "Can you remind me at {time} on {date} to {task}?"),
       intent="set a reminder '{message}' for {date} at {time}",
       answers=("Reminder set: '{message}' on {date} at {time}.",
                "Okay, I'll remind you to {task} at {time} on {date}."),
       view=lambda a: {"task": a["message"][:1].lower() + a["message"][1:]})
def _set_reminder(args):
  r = seeded("reminder", args)
  return {"reminder_id": f"rem_{r.randrange(16 ** 6):06x}", "message": args["message"],
          "date": args["date"], "time": args["time"], "status": "scheduled"}


@_tool("search_contacts", "email", "Find a person in the user's contacts by name.",
       {"name": str_arg("Full or partial name")}, ["name"],
       sample=lambda r: {"name": r.choice(CONTACTS)},
       questions=("What's {name}'s email address?", "Find {name} in my contacts.",
                  "Look up the phone number for {name}.", "How can I reach {name}?"),
       intent="look up {name} in the contacts",
       answers=("{name}'s email is {email} and their phone number is {phone}.",
                "I found {name}: {email}, {phone}."))
def _search_contacts(args):
  match = [c for c in CONTACTS if args["name"].lower() in c.lower()]
  if not match:
    return {"error": f"no contact matches {args['name']}"}
  name = match[0]
  r = seeded("phone", name)
  return {"name": name, "email": _email_of(name), "phone": f"+1-555-{r.randint(100, 999)}-"
                                                            f"{r.randint(1000, 9999)}"}


def email_args(r: random.Random, to: str) -> dict:
  """`send_email` arguments for `to`, with one of the canned subjects and bodies."""
  subject, body = r.choice(EMAILS)
  return {"to": to, "subject": subject, "body": body}


@_tool("send_email", "email", "Send an email.",
       {"to": str_arg("Recipient email address"), "subject": str_arg("Subject line"),
        "body": str_arg("Message text"), "cc": str_arg("Email address to copy")},
       ["to", "subject", "body"],
       sample=lambda r: opts(r, email_args(r, _email_of(r.choice(CONTACTS))), p=0.25,
                             cc=lambda: _email_of(r.choice(CONTACTS))),
       questions=("Send an email to {to} with the subject '{subject}' saying: {body}<"
                  " Copy {cc}.>",
                  "Email {to}< (cc {cc})>. Subject: {subject}. Message: \"{body}\"",
                  "Please write to {to}< and cc {cc}> with subject \"{subject}\" and the text "
                  "\"{body}\""),
       intent="send the email '{subject}' to {to}",
       answers=("Your email '{subject}' was sent to {to}.",
                "Sent! {to} will receive \"{subject}\" (message id {message_id})."))
def _send_email(args):
  r = seeded("send", args)
  return {"status": "sent", "message_id": f"msg_{r.randrange(16 ** 8):08x}", "to": args["to"]}


_FOLDERS = ("inbox", "sent", "archive")


@_tool("search_emails", "email", "Search the user's mailbox.",
       {"query": str_arg("Words to search for"),
        "folder": str_arg("Folder (default inbox)", _FOLDERS),
        "limit": int_arg("Most results to return (default 3)", 1, 10)}, ["query"],
       sample=lambda r: opts(r, {"query": r.choice(("invoice", "flight", "meeting notes",
                                                    "receipt", "password reset", "order "
                                                    "confirmation", "newsletter"))},
                             folder=lambda: r.choice(_FOLDERS), limit=lambda: r.randint(1, 5)),
       questions=("Find emails about {query}< in my {folder} folder><, at most {limit}>.",
                  "Search my mail for \"{query}\"< in {folder}>.< Show {limit} results.>",
                  "Did I get any emails about {query}?< Look in {folder}.>< Up to {limit}, "
                  "please.>"),
       intent="search the mailbox for \"{query}\"< in {folder}>",
       answers=("I found {n_found} email(s) about {query}: {emails_text}.",
                "Matching emails: {emails_text}."),
       derive=lambda a, res: {"n_found": len(res["emails"]), "emails_text": join(
           f"\"{e['subject']}\" from {e['from']} ({e['date']})" for e in res["emails"])})
def _search_emails(args):
  r = seeded("mailbox", args["query"].lower(), args.get("folder", "inbox"))
  n = min(args.get("limit", 3), r.randint(1, 3))
  q = args["query"].capitalize()
  subjects = (f"{q} #{r.randint(1000, 9999)}", f"Re: {q}", f"Your {args['query']}",
              f"{q} - action needed")
  return {"folder": args.get("folder", "inbox"), "emails": [
      {"from": _email_of(c), "subject": s, "date": random_date(r)}
      for c, s in zip(r.sample(CONTACTS, n), r.sample(subjects, n))]}
